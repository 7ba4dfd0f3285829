//! Who did what: the user on every access line, the operation audit of a real Jupyter session
//! (files, kernels, terminals, executed code over both kernel WebSocket protocols) in the audit
//! file and in the log, and the file's chain: `nbgate audit verify` passes, then names the line
//! after one byte is changed, a line removed or two lines swapped; rotation keeps the chain.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use common::kernel::{execute, read_terminal_until, start_kernel, start_terminal};
use common::nbgate::{log_field, test_hashes, TEST_PASSWORD, TEST_USER};
use common::{poll_until, within, Jupyter, Nbgate};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(30);

fn token_id() -> String {
    nbgate::auth::users::token_id(&test_hashes().1)
}

/// The audit file's events (without `audit_start`), parsed.
fn events(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("an audit line is JSON"))
        .filter(|v| v["kind"] != "audit_start")
        .collect()
}

async fn wait_for_kind(file: &Path, kind: &str) -> Vec<Value> {
    poll_until(T, &format!("audit event {kind}"), || async {
        let all = events(file);
        all.iter().any(|e| e["kind"] == kind).then_some(all)
    })
    .await
}

async fn gate_with_audit(jupyter: &Jupyter, extra: &[(&str, toml::Value)]) -> (Nbgate, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let file = dir.join("audit").join("audit.jsonl");
    let mut b = Nbgate::builder()
        .jupyter(jupyter)
        .set("audit.file", file.display().to_string());
    for (k, v) in extra {
        b = b.set(k, v.clone());
    }
    (b.start().await, file)
}

async fn api(
    gate: &Nbgate,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, String, Option<String>) {
    let mut r = gate
        .client()
        .request(method.clone(), gate.url(path))
        .header("origin", gate.origin());
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = within(T, &format!("{method} {path}"), r.send())
        .await
        .expect("request through nbgate");
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, resp.text().await.expect("body"), location)
}

/// A kernel message in the `v1.kernel.websocket.jupyter.org` protocol, as JupyterLab sends it.
fn v1_message(channel: &str, header: &Value, content: &Value) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = [header, &json!({}), &json!({}), content]
        .iter()
        .map(|v| v.to_string().into_bytes())
        .collect();
    let mut offsets = vec![8 * (1 + 1 + parts.len() as u64 + 1)];
    offsets.push(offsets[0] + channel.len() as u64);
    for p in &parts {
        offsets.push(offsets.last().copied().expect("offset") + p.len() as u64);
    }
    let mut out = (offsets.len() as u64).to_le_bytes().to_vec();
    for o in &offsets {
        out.extend_from_slice(&o.to_le_bytes());
    }
    out.extend_from_slice(channel.as_bytes());
    for p in &parts {
        out.extend_from_slice(p);
    }
    out
}

/// The channel, header, parent header and content of a v1 message Jupyter sent.
fn v1_parse(b: &[u8]) -> (String, Value, Value, Value) {
    let word =
        |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes")) as usize;
    let n = word(0);
    let offsets: Vec<usize> = (1..=n).map(word).collect();
    let part = |i: usize| &b[offsets[i]..offsets[i + 1]];
    let json = |i: usize| serde_json::from_slice::<Value>(part(i)).expect("v1 part JSON");
    (
        String::from_utf8(part(0).to_vec()).expect("channel"),
        json(1),
        json(2),
        json(4),
    )
}

/// Runs `code` over a v1-protocol kernel socket; returns the `text/plain` result.
async fn execute_v1(ws: &mut common::nbgate::WsStream, code: &str) -> String {
    let msg_id = common::random_hex(16);
    let header = json!({"msg_id": msg_id, "msg_type": "execute_request", "session": common::random_hex(8),
                        "username": "audit-test", "date": "2024-01-01T00:00:00.000000Z", "version": "5.3"});
    let content = json!({"code": code, "silent": false, "store_history": true, "user_expressions": {},
                         "allow_stdin": false, "stop_on_error": true});
    within(
        T,
        "send v1 execute_request",
        ws.send(Message::Binary(v1_message("shell", &header, &content))),
    )
    .await
    .expect("send");
    let mut result = String::new();
    within(T, "v1 kernel reply", async {
        loop {
            let data = match ws.next().await {
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Text(t))) => panic!("a v1 socket got text: {t}"),
                Some(Ok(_)) => continue,
                other => panic!("v1 socket: {other:?}"),
            };
            let (_, header, parent, content) = v1_parse(&data);
            if parent["msg_id"] != msg_id.as_str() {
                continue;
            }
            match header["msg_type"].as_str() {
                Some("execute_result") => {
                    result = content["data"]["text/plain"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                }
                Some("status") if content["execution_state"] == "idle" => break,
                _ => {}
            }
        }
    })
    .await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jupyter_session_is_audited_in_order_in_the_file_and_the_log() {
    let jupyter = Jupyter::start().await;
    let (gate, file) = gate_with_audit(
        &jupyter,
        &[
            ("audit.code", true.into()),
            ("audit.terminal_input", true.into()),
        ],
    )
    .await;
    let get = reqwest::Method::GET;
    let (post, put, patch, delete) = (
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
    );

    // Files: create, save, rename, open, chunked upload, download, delete.
    let (s, body, location) = api(
        &gate,
        post.clone(),
        "/api/contents",
        Some(json!({"type": "file", "ext": ".txt"})),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let created: Value = serde_json::from_str(&body).expect("model");
    let created = created["path"].as_str().expect("path").to_owned();
    assert!(location.is_some_and(|l| l.ends_with(&created)));
    let (s, body, _) = api(
        &gate,
        put.clone(),
        &format!("/api/contents/{created}"),
        Some(json!({"type": "file", "format": "text", "content": "hello audit"})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, body, _) = api(
        &gate,
        patch,
        &format!("/api/contents/{created}"),
        Some(json!({"path": "notes dir.txt"})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, body, _) = api(
        &gate,
        get.clone(),
        "/api/contents/notes%20dir.txt?type=file&format=text&content=1",
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    // A listing is no operation.
    assert_eq!(
        api(&gate, get.clone(), "/api/contents?content=1", None)
            .await
            .0,
        200
    );

    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let pieces: Vec<&[u8]> = payload.chunks(120_000).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let chunk = if i + 1 == pieces.len() {
            -1
        } else {
            i as i64 + 1
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(piece);
        let (s, body, _) = api(&gate, put.clone(), "/api/contents/upload.bin",
            Some(json!({"type": "file", "format": "base64", "name": "upload.bin", "chunk": chunk, "content": b64}))).await;
        assert!(s == 200 || s == 201, "chunk {chunk}: {s} {body}");
    }
    // Forwarded byte for byte: Jupyter wrote exactly what was sent.
    assert_eq!(
        std::fs::read(jupyter.root_dir().join("upload.bin")).expect("uploaded file"),
        payload
    );

    let (s, body, _) = api(&gate, get.clone(), "/files/notes%20dir.txt", None).await;
    assert_eq!((s, body.as_str()), (200, "hello audit"));
    let (s, _, _) = api(&gate, delete.clone(), "/api/contents/notes%20dir.txt", None).await;
    assert_eq!(s, 204);

    // Kernels: start, code over the JSON and the binary v1 protocol, restart, interrupt, shut down.
    let kernel = start_kernel(&gate).await;
    let mut ws = gate
        .ws_connect(&format!("/api/kernels/{kernel}/channels"))
        .await;
    assert_eq!(execute(&mut ws, "6*7").await, "42");
    drop(ws);
    let origin = gate.origin();
    let mut ws = gate
        .ws_connect_with(
            &format!("/api/kernels/{kernel}/channels"),
            &[
                ("origin", origin.as_str()),
                ("sec-websocket-protocol", "v1.kernel.websocket.jupyter.org"),
            ],
        )
        .await
        .expect("v1 kernel socket");
    assert_eq!(execute_v1(&mut ws, "'v' + '1'").await, "'v1'");
    drop(ws);
    for action in ["restart", "interrupt"] {
        let (s, body, _) = api(
            &gate,
            post.clone(),
            &format!("/api/kernels/{kernel}/{action}"),
            None,
        )
        .await;
        assert!(s == 200 || s == 204, "{action}: {s} {body}");
    }
    assert_eq!(
        api(
            &gate,
            delete.clone(),
            &format!("/api/kernels/{kernel}"),
            None
        )
        .await
        .0,
        204
    );

    // Terminals: open, a typed line, close.
    let term = start_terminal(&gate).await;
    let mut ws = gate
        .ws_connect(&format!("/terminals/websocket/{term}"))
        .await;
    within(
        T,
        "send stdin",
        ws.send(Message::Text(r#"["stdin", "echo audit-''me\r"]"#.into())),
    )
    .await
    .expect("stdin");
    read_terminal_until(&mut ws, "audit-me").await;
    drop(ws);
    assert_eq!(
        api(&gate, delete, &format!("/api/terminals/{term}"), None)
            .await
            .0,
        204
    );

    let all = wait_for_kind(&file, "terminal_close").await;
    let kinds: Vec<&str> = all
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        [
            "file_create",
            "file_save",
            "file_rename",
            "file_open",
            "file_upload",
            "file_download",
            "file_delete",
            "kernel_start",
            "code_execute",
            "code_execute",
            "kernel_restart",
            "kernel_interrupt",
            "kernel_shutdown",
            "terminal_open",
            "terminal_input",
            "terminal_close",
        ],
        "{all:#?}"
    );
    let by = |kind: &str| all.iter().find(|e| e["kind"] == kind).expect(kind).clone();
    for e in &all {
        assert_eq!(e["user"], TEST_USER, "{e}");
        assert_eq!(e["auth"], "token", "{e}");
        assert_eq!(e["auth_id"], token_id().as_str(), "{e}");
        assert_eq!(e["client"], "127.0.0.1", "{e}");
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    }
    assert_eq!(by("file_create")["path"], created.as_str());
    assert_eq!(by("file_create")["status"], 201);
    assert_eq!(
        (
            by("file_save")["path"].clone(),
            by("file_save")["bytes"].clone()
        ),
        (json!(created), json!(11))
    );
    assert_eq!(by("file_rename")["to"], "notes dir.txt");
    assert_eq!(by("file_open")["path"], "notes dir.txt");
    assert_eq!(by("file_upload")["bytes"], payload.len());
    assert_eq!(by("file_upload")["path"], "upload.bin");
    assert_eq!(by("file_delete")["status"], 204);
    assert_eq!(by("kernel_start")["kernel"], kernel.as_str());
    assert_eq!(by("kernel_start")["kernel_name"], "python3");
    let code: Vec<&Value> = all.iter().filter(|e| e["kind"] == "code_execute").collect();
    assert_eq!(code[0]["code"], "6*7");
    assert_eq!(code[0]["code_sha256"], common::sha256_hex(b"6*7").as_str());
    assert_eq!(code[1]["code"], "'v' + '1'");
    assert_eq!(code[1]["kernel"], kernel.as_str());
    assert_eq!(by("kernel_shutdown")["kernel"], kernel.as_str());
    assert_eq!(by("terminal_open")["terminal"], term.as_str());
    assert_eq!(by("terminal_input")["code"], "echo audit-''me");
    assert_eq!(by("terminal_close")["terminal"], term.as_str());

    // The log has the same events, in the same order (the last one written, the log read).
    gate.wait_for_line(&["nbgate::audit", "terminal_close"], T)
        .await;
    let logged: Vec<String> = gate
        .log_lines()
        .iter()
        .filter(|l| l.contains("nbgate::audit") && l.contains("operation"))
        .filter_map(|l| log_field(l, "event"))
        .filter(|k| k != "audit_start")
        .collect();
    assert_eq!(logged, kinds);

    // The file verifies; one changed byte, a removed line, two swapped lines are each named.
    let lines: Vec<String> = std::fs::read_to_string(&file)
        .expect("audit file")
        .lines()
        .map(str::to_owned)
        .collect();
    let ok = verify(&gate, &file).await;
    assert!(ok.status.success(), "{}{}", ok.stdout, ok.stderr);
    assert!(
        ok.stdout.contains(&format!("ok: {} lines", lines.len())),
        "{}",
        ok.stdout
    );

    let write = |ls: &[String]| std::fs::write(&file, ls.join("\n") + "\n").expect("write");
    let mut edited = lines.clone();
    edited[5] = edited[5].replacen("tester", "tostor", 1);
    write(&edited);
    let bad = verify(&gate, &file).await;
    assert!(!bad.status.success());
    assert!(
        bad.stderr.contains("audit.jsonl:6: this line was changed"),
        "{}",
        bad.stderr
    );

    let mut removed = lines.clone();
    removed.remove(3);
    write(&removed);
    let bad = verify(&gate, &file).await;
    assert!(
        bad.stderr
            .contains("audit.jsonl:4: seq 5 where 4 was expected"),
        "{}",
        bad.stderr
    );

    let mut swapped = lines.clone();
    swapped.swap(7, 8);
    write(&swapped);
    let bad = verify(&gate, &file).await;
    assert!(bad.stderr.contains("audit.jsonl:8:"), "{}", bad.stderr);

    write(&lines);
    let shown = gate
        .run_args(&[
            "audit",
            "show",
            "--kind",
            "code_execute",
            &file.display().to_string(),
        ])
        .await;
    assert!(shown.status.success(), "{}", shown.stderr);
    assert_eq!(shown.stdout.lines().count(), 3, "{}", shown.stdout);
    assert!(shown.stdout.contains("code=\"6*7\""), "{}", shown.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_continues_across_rotation_and_a_restart() {
    let jupyter = Jupyter::start().await;
    std::fs::write(jupyter.root_dir().join("r.txt"), "x").expect("file");
    let extra = [
        ("audit.max_size", toml::Value::from("4KiB")),
        ("audit.keep", 3.into()),
    ];
    let (gate, file) = gate_with_audit(&jupyter, &extra).await;
    for _ in 0..25 {
        assert_eq!(
            api(&gate, reqwest::Method::GET, "/files/r.txt", None)
                .await
                .0,
            200
        );
    }
    poll_until(T, "25 downloads in the audit files", || async {
        let n: usize = audit_files(&file)
            .iter()
            .map(|f| {
                events(f)
                    .iter()
                    .filter(|e| e["kind"] == "file_download")
                    .count()
            })
            .sum();
        (n == 25).then_some(())
    })
    .await;
    assert!(
        nbgate::audit::file::rotated(&file, 1).exists(),
        "rotated at 4 KiB"
    );

    // A restart continues the chain from the last line written.
    let mut gate = gate;
    gate.signal(libc::SIGTERM);
    gate.wait_exit(T).await;
    let gate = Nbgate::builder()
        .jupyter(&jupyter)
        .set("audit.file", file.display().to_string())
        .set("audit.max_size", "4KiB")
        .set("audit.keep", 3)
        .start()
        .await;
    assert_eq!(
        api(&gate, reqwest::Method::GET, "/files/r.txt", None)
            .await
            .0,
        200
    );
    let last = poll_until(T, "the download after the restart", || async {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let last = text.lines().last().map(str::to_owned)?;
        last.contains("file_download").then_some(last)
    })
    .await;
    let last: Value = serde_json::from_str(&last).expect("json");
    assert!(last["seq"].as_u64().expect("seq") > 26, "{last}");

    let files: Vec<String> = audit_files(&file)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args = vec!["audit", "verify"];
    args.extend(files.iter().map(String::as_str));
    let ok = gate.run_args(&args).await;
    assert!(ok.status.success(), "{}{}", ok.stdout, ok.stderr);
    for f in audit_files(&file) {
        assert_eq!(common::file_mode(&f) & 0o777, 0o600, "{}", f.display());
    }
}

async fn verify(gate: &Nbgate, file: &Path) -> common::nbgate::Finished {
    gate.run_args(&["audit", "verify", &file.display().to_string()])
        .await
}

fn audit_files(file: &Path) -> Vec<PathBuf> {
    let mut v = vec![file.to_owned()];
    for n in 1..=3 {
        let r = nbgate::audit::file::rotated(file, n);
        if r.exists() {
            v.push(r);
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_name_the_user_and_how_they_authenticated() {
    let jupyter = Jupyter::start().await;
    let gate = Nbgate::start_for(&jupyter).await;
    assert_eq!(
        api(&gate, reqwest::Method::GET, "/api/status", None)
            .await
            .0,
        200
    );
    let line = gate
        .wait_for_line(&["nbgate::access", "path=/api/status", "status=200"], T)
        .await;
    assert_eq!(
        log_field(&line, "user").as_deref(),
        Some(TEST_USER),
        "{line}"
    );
    assert_eq!(log_field(&line, "auth").as_deref(), Some("token"), "{line}");
    assert_eq!(log_field(&line, "auth_id"), Some(token_id()), "{line}");
    assert!(
        !line.contains(common::nbgate::TEST_API_TOKEN),
        "the secret is never logged: {line}"
    );

    // A refused login names the user tried; a session's requests name the session.
    let client = common::login::bare_client(&gate);
    let r = common::login::login_as(&gate, &client, "/", "mallory", "wrong password").await;
    assert_eq!(r.status(), 401);
    let line = gate
        .wait_for_line(&["nbgate::access", "path=/_nbgate/login", "status=401"], T)
        .await;
    assert_eq!(
        log_field(&line, "user_tried").as_deref(),
        Some("mallory"),
        "{line}"
    );
    assert_eq!(log_field(&line, "user"), None, "{line}");

    let r = common::login::login(&gate, &client, TEST_PASSWORD).await;
    assert_eq!(r.status(), 303);
    let cookie = common::login::session_cookie(&r);
    let login_line = gate.wait_for_line(&["event=\"login_success\""], T).await;
    let session = log_field(&login_line, "session").expect("session id prefix");
    let r = client
        .get(gate.url("/api/kernelspecs"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    let line = gate
        .wait_for_line(&["nbgate::access", "path=/api/kernelspecs"], T)
        .await;
    assert_eq!(
        log_field(&line, "auth").as_deref(),
        Some("session"),
        "{line}"
    );
    assert_eq!(log_field(&line, "auth_id"), Some(session), "{line}");

    // Tunnel lines too.
    let kernel = start_kernel(&gate).await;
    let ws = gate
        .ws_connect(&format!("/api/kernels/{kernel}/channels"))
        .await;
    let line = gate.wait_for_line(&["tunnel opened"], T).await;
    assert_eq!(
        log_field(&line, "user").as_deref(),
        Some(TEST_USER),
        "{line}"
    );
    assert_eq!(log_field(&line, "auth").as_deref(), Some("token"), "{line}");
    drop(ws);
}

/// The code audit reads a kernel WebSocket carried as a stream of an HTTP/2 connection (RFC
/// 8441) as it reads an upgraded HTTP/1.1 one: same event, same fields, and the tunnel's access
/// lines name the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_run_over_an_http2_websocket_is_audited() {
    use common::h2ws::{h2_connection, h2_websocket, ApiClient};
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::WebSocketStream;

    let jupyter = Jupyter::start().await;
    let (gate, file) = gate_with_audit(&jupyter, &[("audit.code", true.into())]).await;
    let kernel = start_kernel(&gate).await;
    let api = ApiClient::of(&gate);
    let mut conn = h2_connection(&gate).await;
    let path = format!("/api/kernels/{kernel}/channels");
    let (head, stream) = h2_websocket(&mut conn, &gate, &path, &api.headers()).await;
    assert_eq!(head.status, 200, "{head:?}");
    let mut ws =
        WebSocketStream::from_raw_socket(stream.expect("the stream of a 200"), Role::Client, None)
            .await;
    assert_eq!(execute(&mut ws, "sum(range(10)) # over h2").await, "45");

    let all = wait_for_kind(&file, "code_execute").await;
    let e = all
        .iter()
        .find(|e| e["kind"] == "code_execute")
        .expect("code_execute");
    assert_eq!(e["code"], "sum(range(10)) # over h2", "{e}");
    assert_eq!(e["kernel"], kernel.as_str(), "{e}");
    assert_eq!(e["user"], TEST_USER, "{e}");
    assert_eq!(e["auth"], "token", "{e}");
    let line = gate.wait_for_line(&["tunnel opened", "h2"], T).await;
    assert_eq!(
        log_field(&line, "user").as_deref(),
        Some(TEST_USER),
        "{line}"
    );
    assert_eq!(log_field(&line, "via").as_deref(), Some("h2"), "{line}");
    within(T, "close", ws.close(None)).await.ok();
    let line = gate.wait_for_line(&["tunnel closed", "h2"], T).await;
    assert_eq!(
        log_field(&line, "user").as_deref(),
        Some(TEST_USER),
        "{line}"
    );
}
