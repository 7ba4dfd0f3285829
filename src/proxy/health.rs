//! Whether Jupyter is reachable, as the health page (`<base_url>_nbgate/health`)
//! and the admin listener's `/health` report it: 200 when Jupyter accepted a
//! connection just now, 503 when it did not.
//!
//! A load balancer or `docker HEALTHCHECK` asks without logging in, so the
//! answer holds nothing but up or down: no address, no version, no timing.
//! And since anyone may ask, asking must not turn nbgate into a connection
//! flood against Jupyter: one probe runs at a time and its result is reused
//! for `FRESH`, so health checks cost Jupyter at most one connect a second.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::body::{full, ProxyBody};
use super::transport::UpstreamConnector;

/// How long a probe's result answers health checks.
pub const FRESH: Duration = Duration::from_secs(1);

/// Jupyter's reachability at the last probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Jupyter accepted a connection.
    pub up: bool,
}

/// The last probe's result and the lock that lets one probe run at a time.
#[derive(Default)]
pub struct UpstreamHealth {
    /// std Mutex: never held across an await.
    last: Mutex<Option<(Instant, Health)>>,
    probing: tokio::sync::Mutex<()>,
}

impl UpstreamHealth {
    /// Jupyter's reachability, probed with a connect (under the upstream's
    /// connect timeout) unless a probe less than `FRESH` ago already said.
    pub async fn check(&self, connector: &UpstreamConnector) -> Health {
        if let Some(h) = self.fresh() {
            return h;
        }
        let _one = self.probing.lock().await;
        // Another caller may have probed while this one waited.
        if let Some(h) = self.fresh() {
            return h;
        }
        let health = Health {
            up: connector.connect().await.is_ok(),
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), health));
        health
    }

    fn fresh(&self) -> Option<Health> {
        let last = *self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.filter(|(at, _)| at.elapsed() < FRESH).map(|(_, h)| h)
    }
}

/// The health answer: `{"status":"ok","upstream":"up"}` with 200, or
/// `{"status":"unavailable","upstream":"down"}` with 503. Never cached.
pub fn response(health: Health) -> Response<ProxyBody> {
    let (status, body): (_, &'static [u8]) = if health.up {
        (StatusCode::OK, b"{\"status\":\"ok\",\"upstream\":\"up\"}\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            b"{\"status\":\"unavailable\",\"upstream\":\"down\"}\n",
        )
    };
    let mut r = Response::new(full(Bytes::from_static(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamAddr;

    #[tokio::test]
    async fn a_probe_says_up_while_something_listens_and_down_after() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = UpstreamAddr::Tcp {
            authority: listener.local_addr().expect("addr").to_string(),
        };
        let connector = UpstreamConnector::new(&addr, Duration::from_secs(2));
        let health = UpstreamHealth::default();
        assert!(health.check(&connector).await.up);
        drop(listener);
        // Within FRESH the last result answers; after it a new probe.
        assert!(health.check(&connector).await.up);
        tokio::time::sleep(FRESH).await;
        assert!(!health.check(&connector).await.up);
        assert_eq!(
            response(Health { up: false }).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
