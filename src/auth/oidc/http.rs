//! The HTTP client of the OpenID Connect exchanges (discovery, keys, code
//! exchange): `openidconnect`'s `AsyncHttpClient` over the hyper client and
//! rustls connector nbgate already has (`tls::client`), instead of the
//! crate's default reqwest stack, so the provider's roots come from the same
//! place as the ACME client's (`ca_bundle` or the platform's).
//!
//! Every URL is checked before it is asked: `https://`, or `http://` to a
//! loopback host. The issuer is checked at configuration time, but the
//! token and key endpoints come from the provider's discovery document; a
//! plain-http endpoint there would send the client secret and the code in
//! the clear. Redirects are never followed (a redirect from a provider
//! endpoint could point the client anywhere: server-side request forgery).
//! Each exchange has a deadline and a body cap.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, USER_AGENT};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};

use crate::config::is_loopback_host;
use crate::tls::client::{connector_builder, ClientTlsError};

/// The longest one exchange with the provider may take, body included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read: discovery documents and key sets are a few KiB.
const MAX_BODY: usize = 1 << 20;

/// Why an exchange with the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Only the scheme and authority: a URL may carry a query.
    #[error("{0}: only https:// (or http:// to a loopback host) is used")]
    Scheme(String),
    #[error("request to the provider failed")]
    Request(#[source] hyper_util::client::legacy::Error),
    #[error("the provider did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the provider's answer was unreadable or over 1 MiB")]
    Body,
}

/// A pooled client for one provider (its own roots when it has a `ca_bundle`).
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// # Errors
    /// The CA bundle is unreadable or empty; no platform verifier.
    pub fn try_new(ca_bundle: Option<&Path>) -> Result<Self, ClientTlsError> {
        // `https_or_http`: loopback providers (tests, a provider on the same
        // host) speak plain HTTP; `send` refuses every other http:// URL.
        let https = connector_builder(ca_bundle)?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Ok(HttpClient { client })
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        url_allowed(request.uri())?;
        let (parts, body) = request.into_parts();
        let mut request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        request
            .headers_mut()
            .insert(USER_AGENT, HeaderValue::from_static("nbgate"));
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(HttpError::Request)?;
            let (parts, body) = response.into_parts();
            let bytes = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|_| HttpError::Body)?
                .to_bytes();
            Ok(http::Response::from_parts(parts, bytes.to_vec()))
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| HttpError::Timeout(TIMEOUT))?
    }
}

/// Whether nbgate may send a request to `uri` (see the module doc).
///
/// # Errors
/// `HttpError::Scheme` naming the scheme and authority.
pub fn url_allowed(uri: &http::Uri) -> Result<(), HttpError> {
    let ok = match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => true,
        (Some("http"), Some(host)) => is_loopback_host(host),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(HttpError::Scheme(format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map_or("", |a| a.as_str())
        )))
    }
}

impl<'c> AsyncHttpClient<'c> for HttpClient {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_and_loopback_http_urls_are_asked() {
        for ok in [
            "https://idp.example.com/token",
            "http://127.0.0.1:9000/jwks",
            "http://localhost:1/x",
            "http://[::1]:2/y",
        ] {
            assert!(url_allowed(&ok.parse().expect("uri")).is_ok(), "{ok}");
        }
        for bad in [
            "http://idp.example.com/token?secret=1",
            "http://10.1.2.3/jwks",
            "ftp://idp.example.com/",
        ] {
            let e = url_allowed(&bad.parse().expect("uri")).expect_err(bad);
            assert!(!e.to_string().contains("secret"), "{e}");
        }
    }
}
