//! The Jupyter kernel and terminal protocols as a browser speaks them through nbgate: REST calls
//! to create a kernel or terminal, then JSON messages over the WebSocket.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::nbgate::Nbgate;

/// How long one execute round trip may take (a fresh kernel answers in about 1.2 s).
const EXECUTE_TIMEOUT: Duration = Duration::from_secs(60);

/// `POST /api/kernels` through nbgate; returns the kernel id.
pub async fn start_kernel(gate: &Nbgate) -> String {
    let response = super::within(
        Duration::from_secs(60),
        "POST /api/kernels",
        gate.client()
            .post(gate.url("/api/kernels"))
            .header("origin", gate.origin())
            .json(&json!({"name": "python3"}))
            .send(),
    )
    .await
    .expect("POST /api/kernels");
    let status = response.status();
    let body = response.text().await.expect("kernel response body");
    assert_eq!(status, 201, "POST /api/kernels: {body}");
    let model: Value = serde_json::from_str(&body).expect("kernel model JSON");
    model["id"]
        .as_str()
        .unwrap_or_else(|| panic!("kernel model without id: {body}"))
        .to_string()
}

/// Runs `code` on the kernel behind `ws` (a `/api/kernels/ID/channels` socket) and returns the
/// `execute_result` `text/plain` value, or the collected stdout when there is no result.
///
/// # Panics
/// On a kernel `error` reply, a closed socket, or after 60 s.
pub async fn execute<S>(ws: &mut WebSocketStream<S>, code: &str) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let msg_id = super::random_hex(16);
    let request = json!({
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "session": super::random_hex(16),
            "username": "nbgate-test",
            "date": "2024-01-01T00:00:00.000000Z",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "channel": "shell",
        "content": {
            "code": code,
            "silent": false,
            "store_history": true,
            "user_expressions": {},
            "allow_stdin": false,
            "stop_on_error": true,
        },
        "buffers": [],
    });
    super::within(EXECUTE_TIMEOUT, "send execute_request", async {
        ws.send(Message::Text(request.to_string()))
            .await
            .expect("send execute_request")
    })
    .await;

    let mut result: Option<String> = None;
    let mut stdout = String::new();
    super::within(
        EXECUTE_TIMEOUT,
        &format!("kernel reply to {code:?}"),
        async {
            loop {
                let message = match ws.next().await {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => panic!("kernel WebSocket error while executing {code:?}: {e}"),
                    None => panic!("kernel WebSocket closed while executing {code:?}"),
                };
                let text = match message {
                    Message::Text(text) => text,
                    Message::Close(frame) => panic!("kernel WebSocket closed: {frame:?}"),
                    _ => continue,
                };
                let msg: Value = serde_json::from_str(&text).expect("kernel message JSON");
                if msg["parent_header"]["msg_id"] != msg_id.as_str() {
                    continue;
                }
                let content = &msg["content"];
                match msg["msg_type"].as_str() {
                    Some("execute_result") => {
                        result = content["data"]["text/plain"].as_str().map(str::to_string);
                    }
                    Some("stream") if content["name"] == "stdout" => {
                        stdout.push_str(content["text"].as_str().unwrap_or_default());
                    }
                    Some("error") => panic!(
                        "kernel error for {code:?}: {} {}",
                        content["ename"], content["evalue"]
                    ),
                    Some("status") if content["execution_state"] == "idle" => break,
                    _ => {}
                }
            }
        },
    )
    .await;
    result.unwrap_or(stdout)
}

/// `POST /api/terminals` through nbgate; returns the terminal name.
pub async fn start_terminal(gate: &Nbgate) -> String {
    let response = super::within(
        Duration::from_secs(30),
        "POST /api/terminals",
        gate.client()
            .post(gate.url("/api/terminals"))
            .header("origin", gate.origin())
            .send(),
    )
    .await
    .expect("POST /api/terminals");
    let status = response.status();
    let body = response.text().await.expect("terminal response body");
    assert_eq!(status, 200, "POST /api/terminals: {body}");
    let model: Value = serde_json::from_str(&body).expect("terminal model JSON");
    model["name"]
        .as_str()
        .unwrap_or_else(|| panic!("terminal model without name: {body}"))
        .to_string()
}

/// Reads terminal `stdout` messages until their concatenation contains `needle` (30 s limit);
/// returns everything read.
pub async fn read_terminal_until<S>(ws: &mut WebSocketStream<S>, needle: &str) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut output = String::new();
    super::within(
        Duration::from_secs(30),
        &format!("terminal output containing {needle:?}"),
        async {
            while !output.contains(needle) {
                let text = match ws.next().await {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        panic!("terminal closed: {frame:?}; output so far: {output:?}")
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => panic!("terminal WebSocket error: {e}; output: {output:?}"),
                    None => panic!("terminal WebSocket ended; output so far: {output:?}"),
                };
                let msg: Value = serde_json::from_str(&text).expect("terminal message JSON");
                if msg[0] == "stdout" {
                    output.push_str(msg[1].as_str().unwrap_or_default());
                }
            }
        },
    )
    .await;
    output
}
