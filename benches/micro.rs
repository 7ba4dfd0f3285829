//! Micro benches of the per-request hot paths (issue 6, measure 8): the
//! session cookie check every logged-in request pays, and the header
//! rewrite every forwarded request and response goes through.
//!
//! Run: `cargo bench --bench micro` (the harness `benches/run.sh` runs it
//! with short warm-up and measurement times). The allowlist and rate-limit
//! benches live in `benches/policy.rs`.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use nbgate::auth::password::{hash_password_with_iterations, MIN_ITERATIONS};
use nbgate::auth::session::{Lifetime, SessionKeys, Verdict, SESSION_COOKIE};
use nbgate::auth::users::UserStore;
use nbgate::auth::Authenticator;
use nbgate::proxy::headers;

const LIFE: Lifetime = Lifetime {
    idle: Duration::from_secs(86_400),
    max: Duration::from_secs(7 * 86_400),
};

/// The value part of a `Set-Cookie: __Host-nbgate-session=VALUE; ...`.
fn cookie_value(set_cookie: &str) -> String {
    let (_, rest) = set_cookie
        .split_once('=')
        .expect("Set-Cookie has name=value");
    rest.split(';')
        .next()
        .expect("split yields one item")
        .to_owned()
}

/// Where the bench's session is seen from (as a request would say).
fn here() -> nbgate::auth::active::Sighting<'static> {
    nbgate::auth::active::Sighting {
        client: IpAddr::from([127, 0, 0, 1]),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36"),
    }
}

fn authenticator() -> Authenticator {
    // The iteration count only matters for password logins, not for the
    // cookie check measured here.
    let hash = hash_password_with_iterations("bench-password", MIN_ITERATIONS).expect("hash");
    let mut users = UserStore::default();
    users
        .add("bench", "alice", Some(&hash), &[])
        .expect("valid user");
    Authenticator::for_tests(users, LIFE)
}

fn session_cookie(c: &mut Criterion) {
    let auth = authenticator();
    let (_, set) = auth.start_session("alice", here());
    assert!(set.starts_with(SESSION_COOKIE));
    let value = cookie_value(&set);
    assert!(matches!(
        auth.check_session(&value),
        Some(Verdict::Valid { .. })
    ));
    let mut g = c.benchmark_group("session");
    g.bench_function("check_session (decrypt + lifetime + revocation)", |b| {
        b.iter(|| auth.check_session(black_box(&value)))
    });
    // What a keep-alive or HTTP/2 connection pays from its second request
    // on: the value matches the connection's last one.
    let cache = nbgate::auth::SessionCache::default();
    g.bench_function(
        "check_session_cached (same value as the connection's last)",
        |b| b.iter(|| auth.check_session_cached(black_box(&value), &cache, here)),
    );
    let keys = SessionKeys::ephemeral();
    let (claims, _) = auth.start_session("alice", here());
    let sealed = cookie_value(&keys.seal(&claims, LIFE.max));
    g.bench_function("open (AES-GCM decrypt + JSON only)", |b| {
        b.iter(|| keys.open(black_box(&sealed)))
    });
    let forged = {
        let mut v = value.clone().into_bytes();
        let mid = v.len() / 2;
        v[mid] = if v[mid] == b'A' { b'B' } else { b'A' };
        String::from_utf8(v).expect("ascii")
    };
    g.bench_function("check_session (forged cookie)", |b| {
        b.iter(|| auth.check_session(black_box(&forged)))
    });
    g.finish();
}

/// The request head a browser sends for a JupyterLab API call.
fn browser_request() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "nb.example.org"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
        ("accept", "application/json"),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("referer", "https://nb.example.org/lab/tree/work/analysis.ipynb"),
        ("x-xsrftoken", "2|8c1e2f4a|0123456789abcdef0123456789abcdef|1700000000"),
        ("connection", "keep-alive"),
        ("cookie", "_xsrf=2|8c1e2f4a|0123456789abcdef|1700000000; username-nb-example-org=2|1:0|10:1700000000"),
        ("sec-fetch-dest", "empty"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-site", "same-origin"),
    ] {
        h.append(
            HeaderName::from_static(k),
            HeaderValue::from_static(v),
        );
    }
    h
}

/// The response head Jupyter sends for that call.
fn jupyter_response() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("server", "TornadoServer/6.4"),
        ("content-type", "application/json"),
        ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ("x-content-type-options", "nosniff"),
        (
            "content-security-policy",
            "frame-ancestors 'self'; report-uri /api/security/csp-report",
        ),
        (
            "access-control-allow-headers",
            "accept, content-type, authorization, x-xsrftoken",
        ),
        ("etag", "\"0123456789abcdef\""),
        ("content-length", "1024"),
    ] {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn header_rewrite(c: &mut Criterion) {
    let client: IpAddr = "203.0.113.7".parse().expect("ip");
    let public_host = "nb.example.org";
    let origins = vec![
        "http://127.0.0.1:8888".to_owned(),
        "http://localhost:8888".to_owned(),
    ];
    let hsts = HeaderValue::from_static("max-age=31536000");
    let mut g = c.benchmark_group("headers");
    g.bench_function(
        "request rewrite (hop-by-hop, forwarded, host/origin)",
        |b| {
            b.iter_batched_ref(
                browser_request,
                |h| {
                    headers::remove_hop_by_hop(h);
                    headers::set_forwarded(h, client, public_host);
                    headers::present_to_upstream(
                        h,
                        "127.0.0.1:8888",
                        &HeaderValue::from_static("127.0.0.1:8888"),
                        public_host,
                    );
                },
                BatchSize::SmallInput,
            )
        },
    );
    g.bench_function(
        "response rewrite (hop-by-hop, location, security headers)",
        |b| {
            b.iter_batched_ref(
                jupyter_response,
                |h| {
                    headers::remove_hop_by_hop(h);
                    headers::rewrite_location(h, &origins, public_host);
                    headers::add_security_headers(h, Some(&hsts));
                },
                BatchSize::SmallInput,
            )
        },
    );
    g.bench_function("baseline: building the request map only", |b| {
        b.iter(|| black_box(browser_request()))
    });
    g.finish();
}

criterion_group!(benches, session_cookie, header_rewrite);
criterion_main!(benches);
