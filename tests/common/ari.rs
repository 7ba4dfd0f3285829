//! A stand-in for one ACME endpoint that Pebble 2.4 (Debian's) does not have: ACME Renewal
//! Information (RFC 9773). This is a mock, and only for that endpoint: it serves Pebble's real
//! directory with a `renewalInfo` URL added, and answers that URL itself; every other ACME
//! request (accounts, orders, challenges, certificates) goes to the real Pebble, whose URLs the
//! directory keeps.
//!
//! The first certificate it is asked about gets a window that has already started ("renew
//! now"); every later one a window 30 days ahead. It records the certificate identifiers asked
//! about, in order.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::pebble::Pebble;

pub struct AriMock {
    pub port: u16,
    /// Certificate identifiers (`<aki>.<serial>`, base64url) asked about, in order.
    pub asked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AriMock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AriMock {
    /// Serves on 127.0.0.1 with the certificate Pebble's directory uses (so the same
    /// `tls.acme.ca_bundle` trusts both).
    pub async fn start(pebble: &Pebble) -> AriMock {
        let (cert, key) = pebble.directory_tls_files();
        let certs = super::certs::parse_pem_certs(&std::fs::read(cert).expect("read cert"));
        let key = rustls_pemfile::private_key(&mut &std::fs::read(key).expect("read key")[..])
            .expect("key PEM")
            .expect("a private key");
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let client = pebble.directory_client();
        let state = Arc::new(State {
            pebble_directory: pebble.directory_url(),
            own: format!("https://127.0.0.1:{port}"),
            client,
            asked: Arc::clone(&asked),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, state) = (acceptor.clone(), Arc::clone(&state));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(state.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        AriMock { port, asked, task }
    }

    /// The directory URL for `tls.acme.directory`.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("lock").clone()
    }
}

struct State {
    pebble_directory: String,
    own: String,
    client: reqwest::Client,
    asked: Arc<Mutex<Vec<String>>>,
}

impl State {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        if path == "/dir" {
            let mut dir: serde_json::Value = self
                .client
                .get(&self.pebble_directory)
                .send()
                .await
                .expect("GET Pebble's directory")
                .json()
                .await
                .expect("directory JSON");
            dir["renewalInfo"] = format!("{}/renewal-info", self.own).into();
            return json(dir.to_string(), None);
        }
        if let Some(id) = path.strip_prefix("/renewal-info/") {
            let first = {
                let mut asked = self.asked.lock().expect("lock");
                let first = asked.first().is_none_or(|f| f == id);
                asked.push(id.to_owned());
                first
            };
            let now = time::OffsetDateTime::now_utc();
            let (start, end) = if first {
                (
                    now - time::Duration::hours(1),
                    now - time::Duration::minutes(1),
                )
            } else {
                (
                    now + time::Duration::days(30),
                    now + time::Duration::days(31),
                )
            };
            let rfc3339 = |t: time::OffsetDateTime| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .expect("format")
            };
            let body = serde_json::json!({
                "suggestedWindow": { "start": rfc3339(start), "end": rfc3339(end) }
            });
            return json(body.to_string(), Some(3600));
        }
        let mut r = Response::new(Full::new(Bytes::from_static(b"not found")));
        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
        r
    }
}

fn json(body: String, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Some(secs) = retry_after {
        r.headers_mut()
            .insert(hyper::header::RETRY_AFTER, secs.into());
    }
    r
}
