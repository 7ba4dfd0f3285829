//! Client side plumbing shared by every measure: where a contender listens,
//! TCP + TLS connections, a one-shot HTTP/1.1 request, and nbgate's login.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a load generator sends its requests.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `None`: plain HTTP (the direct contender).
    pub tls: Option<Arc<TlsSetup>>,
    /// `Host` / `:authority` / SNI host with port, e.g. `localhost:8443`.
    pub authority: String,
    /// Extra headers on every request: the session cookie for nbgate, the
    /// Jupyter token for the Jupyter runs through other contenders.
    pub auth: HeaderMap,
}

pub struct TlsSetup {
    pub connector_h1: TlsConnector,
    pub connector_h2: TlsConnector,
    pub connector_h1_no_resume: TlsConnector,
    pub connector_h1_x25519: TlsConnector,
}

impl Target {
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn ws_scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "wss"
        } else {
            "ws"
        }
    }

    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme(), self.authority)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    pub fn with_auth(&self, auth: HeaderMap) -> Target {
        Target {
            auth,
            ..self.clone()
        }
    }

    pub async fn connect(&self, alpn: Alpn) -> io::Result<Stream> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let connector = match alpn {
            Alpn::H1 => &tls.connector_h1,
            Alpn::H2 => &tls.connector_h2,
            Alpn::H1NoResume => &tls.connector_h1_no_resume,
            Alpn::H1X25519 => &tls.connector_h1_x25519,
        };
        let name = ServerName::try_from("localhost").expect("valid name");
        let s = connector.connect(name, tcp).await?;
        Ok(Stream::Tls(Box::new(s)))
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Alpn {
    H1,
    H2,
    /// HTTP/1.1 with session resumption off: every handshake is a full one.
    H1NoResume,
    /// HTTP/1.1 from a client that offers X25519 only (a client without
    /// ML-KEM): every server does the same key exchange.
    H1X25519,
}

/// The same client TLS settings for every contender: TLS 1.3 only (the
/// issue measures TLS 1.3 handshakes), rustls' aws-lc-rs defaults, which
/// offer the key exchange groups as current browsers do (X25519MLKEM768
/// first, with key shares for it and for X25519): a server with ML-KEM
/// negotiates the hybrid, one without it X25519, as with Chrome.
pub fn tls_setup() -> Arc<TlsSetup> {
    let make_with = |alpn: &[&[u8]], resume: bool, x25519_only: bool| {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        if x25519_only {
            provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
        }
        let provider = Arc::new(provider);
        let mut cfg = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("aws-lc-rs supports TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        if !resume {
            cfg.resumption = rustls::client::Resumption::disabled();
        }
        TlsConnector::from(Arc::new(cfg))
    };
    let make = |alpn: &[&[u8]], resume: bool| make_with(alpn, resume, false);
    Arc::new(TlsSetup {
        connector_h1: make(&[b"http/1.1"], true),
        connector_h2: make(&[b"h2"], true),
        connector_h1_no_resume: make(&[b"http/1.1"], false),
        connector_h1_x25519: make_with(&[b"http/1.1"], true, true),
    })
}

/// Accepts the benchmark's own certificate without chain building but still
/// checks the handshake signature, so the server does exactly the work it
/// does for a browser while the client spends little of the shared CPU.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client connection, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    pub fn resumed(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => matches!(
                s.get_ref().1.handshake_kind(),
                Some(rustls::HandshakeKind::Resumed)
            ),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, b),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, b),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An HTTP/1.1 connection's request sender.
pub type H1Sender<B> = hyper::client::conn::http1::SendRequest<B>;

/// Opens an HTTP/1.1 connection (the connection task is spawned).
pub async fn h1_connect<B>(target: &Target) -> Result<H1Sender<B>, BoxError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let s = target.connect(Alpn::H1).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// The request builder with Host and the target's auth headers set.
pub fn request(target: &Target, method: &str, path: &str) -> http::request::Builder {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, target.authority.as_str());
    for (k, v) in &target.auth {
        b = b.header(k, v);
    }
    b
}

/// One request on a fresh connection: `(status, headers, body)`.
pub async fn one_shot(
    target: &Target,
    req: Request<Full<Bytes>>,
) -> Result<(u16, HeaderMap, Bytes), BoxError> {
    let mut sender = h1_connect::<Full<Bytes>>(target).await?;
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req)).await??;
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((status, parts.headers, body))
}

fn set_cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (k, rest) = v.split_once('=')?;
            (k == name).then(|| rest.split(';').next().unwrap_or("").to_owned())
        })
}

/// What a login form needs: the CSRF binding cookie and token.
pub struct LoginForm {
    pub csrf_cookie: String,
    pub csrf_token: String,
}

/// `GET /_nbgate/login`: the CSRF cookie and the hidden `csrf` field.
pub async fn login_form(target: &Target) -> Result<LoginForm, BoxError> {
    let req = request(target, "GET", "/_nbgate/login")
        .header("accept", "text/html")
        .body(Full::new(Bytes::new()))?;
    let (status, headers, body) = one_shot(target, req).await?;
    let csrf_cookie =
        set_cookie_value(&headers, "__Host-nbgate-csrf").ok_or("login page without csrf cookie")?;
    let html = String::from_utf8_lossy(&body);
    let marker = "name=\"csrf\" value=\"";
    let at = html
        .find(marker)
        .ok_or_else(|| format!("login page ({status}) without csrf field"))?;
    let rest = &html[at + marker.len()..];
    let csrf_token = rest[..rest.find('"').ok_or("unterminated csrf field")?].to_owned();
    Ok(LoginForm {
        csrf_cookie,
        csrf_token,
    })
}

/// The login POST, as a browser sends it.
pub fn login_post(
    target: &Target,
    form: &LoginForm,
    user: &str,
    password: &str,
) -> Request<Full<Bytes>> {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", &form.csrf_token)
        .append_pair("next", "/")
        .append_pair("username", user)
        .append_pair("password", password)
        .finish();
    request(target, "POST", "/_nbgate/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", target.origin())
        .header("accept", "text/html")
        .header("cookie", format!("__Host-nbgate-csrf={}", form.csrf_cookie))
        .body(Full::new(Bytes::from(body)))
        .expect("valid request")
}

/// Logs in and returns the `Cookie` header value every later request sends.
pub async fn login(target: &Target, user: &str, password: &str) -> Result<HeaderValue, BoxError> {
    let form = login_form(target).await?;
    let (status, headers, _) = one_shot(target, login_post(target, &form, user, password)).await?;
    let session = set_cookie_value(&headers, "__Host-nbgate-session")
        .ok_or_else(|| format!("login answered {status} without a session cookie"))?;
    Ok(HeaderValue::from_str(&format!(
        "__Host-nbgate-session={session}"
    ))?)
}

/// Polls until `addr` accepts TCP connections.
pub async fn wait_listening(addr: SocketAddr, limit: Duration) -> Result<(), BoxError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{addr} not listening after {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Latency percentiles from microsecond samples.
#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

impl Percentiles {
    /// In microseconds; sorts `samples`.
    pub fn of(samples: &mut [u32]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            f64::from(samples[i])
        };
        Percentiles {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
        }
    }
}
