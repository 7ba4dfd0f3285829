//! `nbgate serve` in front of a Jupyter that is already running with its default random token:
//! no token configured, nbgate finds it in Jupyter's runtime file, follows it when Jupyter
//! restarts with a new one, and when it cannot find one shows its own error page, never
//! Jupyter's token page.

mod common;

use std::time::Duration;

use common::login::{bare_client, login, session_cookie};
use common::nbgate::TEST_PASSWORD;
use common::{Jupyter, JupyterOptions, Nbgate};

async fn default_lab() -> Jupyter {
    Jupyter::start_with(JupyterOptions {
        lab: true,
        generated_token: true,
        ..JupyterOptions::default()
    })
    .await
}

/// The README's first command, `nbgate serve --upstream URL`, with no token configured.
async fn gate_for(jupyter: &Jupyter, runtime_dir: &str) -> Nbgate {
    Nbgate::builder()
        .remove("upstream.token_file")
        .arg("--upstream")
        .arg(&jupyter.upstream_url())
        .env("JUPYTER_RUNTIME_DIR", runtime_dir)
        .start()
        .await
}

async fn get(
    gate: &Nbgate,
    client: &reqwest::Client,
    path: &str,
    cookie: &str,
    accept: &str,
) -> (u16, String) {
    let r = client
        .get(gate.url(path))
        .header("cookie", cookie)
        .header("accept", accept)
        .send()
        .await
        .expect("GET");
    (r.status().as_u16(), r.text().await.expect("body"))
}

#[tokio::test]
async fn one_login_lands_in_jupyterlab_and_a_restarted_jupyter_keeps_working() {
    let mut jupyter = default_lab().await;
    let first_token = jupyter.token().to_owned();
    let gate = gate_for(&jupyter, &jupyter.runtime_dir().display().to_string()).await;
    assert!(gate.log_contains("jupyter token found in its runtime file"));

    let client = bare_client(&gate);
    let answer = login(&gate, &client, TEST_PASSWORD).await;
    assert_eq!(answer.status(), 303);
    let cookie = session_cookie(&answer);
    let (status, html) = get(&gate, &client, "/lab", &cookie, "text/html").await;
    assert_eq!(status, 200, "{html:.300}");
    assert!(
        html.contains("jupyter-config-data"),
        "not JupyterLab: {html:.300}"
    );
    assert!(!html.contains(&first_token));
    let (status, body) = get(&gate, &client, "/api/kernels", &cookie, "application/json").await;
    assert_eq!(status, 200, "{body}");

    // Jupyter restarts with a new random token: the next requests still work.
    jupyter.restart().await;
    assert_ne!(jupyter.token(), first_token, "restart made a new token");
    let (status, body) = get(&gate, &client, "/api/kernels", &cookie, "application/json").await;
    assert_eq!(status, 200, "after restart: {body}");
    let (status, html) = get(&gate, &client, "/lab", &cookie, "text/html").await;
    assert_eq!(status, 200, "after restart: {html:.300}");
    assert!(!html.contains(jupyter.token()));
    let log = gate.log_text();
    assert!(
        !log.contains(&first_token) && !log.contains(jupyter.token()),
        "token in the log"
    );
}

#[tokio::test]
async fn an_unreadable_runtime_dir_gives_nbgates_error_page_and_one_clear_log_line() {
    let jupyter = default_lab().await;
    // A file where the runtime directory should be cannot be listed (mode 0 would not stop
    // root, who runs CI).
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_dir = dir.path().join("runtime");
    std::fs::write(&not_a_dir, "").expect("write");
    let gate = gate_for(&jupyter, &not_a_dir.display().to_string()).await;
    let line = gate
        .wait_for_log("cannot authenticate to jupyter", Duration::from_secs(10))
        .await;
    assert!(line.contains(&not_a_dir.display().to_string()), "{line}");
    assert!(
        line.contains("upstream.token_file") && line.contains("nbgate run"),
        "{line}"
    );

    let client = bare_client(&gate);
    let answer = login(&gate, &client, TEST_PASSWORD).await;
    let cookie = session_cookie(&answer);
    // A browser gets nbgate's page naming the fixes, not Jupyter's token page.
    let (status, html) = get(&gate, &client, "/lab", &cookie, "text/html").await;
    assert_eq!(status, 502, "{html:.500}");
    assert!(html.contains("upstream.token_file"), "{html}");
    assert!(
        !html
            .to_lowercase()
            .contains("token authentication is enabled"),
        "{html}"
    );
    // An API client gets JSON with a stable code.
    let (status, body) = get(&gate, &client, "/api/kernels", &cookie, "application/json").await;
    assert_eq!(status, 502);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"], "upstream_auth", "{body}");
}
