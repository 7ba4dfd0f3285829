//! Prometheus metrics: the counters nbgate keeps, and their text exposition
//! (`render`) that the admin listener serves at `/metrics`.
//!
//! Cost on the request path (issue 19: at most 2% of requests/s): a request
//! adds to counters that are resolved at compile time (arrays indexed by
//! kind and status class, no label lookup per request) and that live in
//! per-thread shards, each on its own cache lines. nbgate runs one
//! single-threaded runtime per core, so a worker only ever writes its own
//! shard and no cache line bounces between cores; `render` adds the shards
//! up at scrape time. Events that are rare by nature (logins, token checks,
//! lockouts, reloads, renewals, upstream connects) use one shared atomic each.
//!
//! The per-request counters (requests, latency, bytes) are kept only once
//! `enable` was called, which `server` does when `[admin] listen` is set:
//! without an admin listener nobody can read them. Gauges the server keeps
//! anyway (open connections and tunnels, the certificate, the upstream's
//! reachability) are not duplicated here: the caller reads them at scrape
//! time and passes them in (`Gauges`).
//!
//! This module imports nothing else of the crate: anything may call it.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The `Content-Type` of `render`'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What a request was, for `nbgate_requests_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// nbgate's own pages under `<base_url>_nbgate/` (login, logout, health).
    OwnPage = 0,
    /// Everything else that got a response other than 101, refusals included.
    Proxied = 1,
    /// A WebSocket upgrade that Jupyter accepted (101): a tunnel opened.
    WebSocket = 2,
}

const KINDS: [(Kind, &str); 3] = [
    (Kind::OwnPage, "own_page"),
    (Kind::Proxied, "proxied"),
    (Kind::WebSocket, "websocket"),
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Upper bounds of the latency histogram buckets, in microseconds (the last
/// bucket, +Inf, is implicit): from a cached own page to a slow notebook save.
const LATENCY_BOUNDS_US: [u64; 12] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];
const LATENCY_SLOTS: usize = LATENCY_BOUNDS_US.len() + 1;

/// Upper bounds of the upstream connect histogram, in microseconds:
/// loopback and Unix sockets connect in well under a millisecond.
const CONNECT_BOUNDS_US: [u64; 8] = [100, 250, 500, 1_000, 5_000, 25_000, 100_000, 1_000_000];
const CONNECT_SLOTS: usize = CONNECT_BOUNDS_US.len() + 1;

/// One worker's counters. Aligned so that two shards never share a cache
/// line (128 bytes: adjacent-line prefetch pairs lines on x86).
#[repr(align(128))]
struct Shard {
    requests: [[AtomicU64; CLASSES.len()]; KINDS.len()],
    /// Per kind, per bucket (not cumulative: `render` accumulates).
    latency: [[AtomicU64; LATENCY_SLOTS]; KINDS.len()],
    latency_sum_us: [AtomicU64; KINDS.len()],
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
}

impl Shard {
    const fn new() -> Self {
        Shard {
            requests: [const { [const { AtomicU64::new(0) }; CLASSES.len()] }; KINDS.len()],
            latency: [const { [const { AtomicU64::new(0) }; LATENCY_SLOTS] }; KINDS.len()],
            latency_sum_us: [const { AtomicU64::new(0) }; KINDS.len()],
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
        }
    }
}

/// More shards than workers on most machines; a thread beyond them shares
/// one (the counters stay exact, the line may bounce).
const SHARDS: usize = 32;
static SHARD: [Shard; SHARDS] = [const { Shard::new() }; SHARDS];
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's shard, assigned on first use.
fn shard() -> &'static Shard {
    let i = MY_SHARD.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS;
            s.set(i);
        }
        i
    });
    &SHARD[i]
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Starts keeping the per-request counters (the admin listener serves them).
pub fn enable() {
    ENABLED.store(true, Relaxed);
}

fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// Counts one answered request: `own_page` for nbgate's own pages, a 101
/// is a WebSocket tunnel, anything else a proxied request (refusals
/// included). `start` is when the request arrived: the latency is the time
/// to the response head.
#[inline]
pub fn request(own_page: bool, status: u16, start: Instant) {
    if !enabled() {
        return;
    }
    let kind = if own_page {
        Kind::OwnPage
    } else if status == 101 {
        Kind::WebSocket
    } else {
        Kind::Proxied
    } as usize;
    let class = usize::from(status / 100).clamp(1, 5) - 1;
    let us = micros(start.elapsed());
    let slot = slot(&LATENCY_BOUNDS_US, us);
    let s = shard();
    s.requests[kind][class].fetch_add(1, Relaxed);
    s.latency[kind][slot].fetch_add(1, Relaxed);
    s.latency_sum_us[kind].fetch_add(us, Relaxed);
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The histogram bucket of `us`: the first bound it does not exceed, else +Inf.
fn slot(bounds_us: &[u64], us: u64) -> usize {
    bounds_us
        .iter()
        .position(|&b| us <= b)
        .unwrap_or(bounds_us.len())
}

pin_project_lite::pin_project! {
    /// A client connection's byte stream (after TLS), counting what is
    /// read and written into the shard of the thread that serves it (a
    /// connection never changes threads). WebSocket tunnels run over the
    /// same stream, so their bytes are counted too.
    pub struct CountedIo<T> {
        #[pin]
        inner: T,
        shard: Option<&'static Shard>,
    }
}

impl<T> CountedIo<T> {
    pub fn new(inner: T) -> Self {
        CountedIo {
            inner,
            shard: enabled().then(shard),
        }
    }
}

impl<T: AsyncRead> AsyncRead for CountedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if let Some(s) = this.shard {
            let n = buf.filled().len().saturating_sub(before);
            if n > 0 {
                s.bytes_received.fetch_add(n as u64, Relaxed);
            }
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for CountedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        count_sent(*this.shard, &polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        count_sent(*this.shard, &polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

fn count_sent(shard: Option<&'static Shard>, polled: &Poll<io::Result<usize>>) {
    if let (Some(s), Poll::Ready(Ok(n))) = (shard, polled) {
        s.bytes_sent.fetch_add(*n as u64, Relaxed);
    }
}

/// The outcome of a password login (`nbgate_logins_total{outcome}`).
#[derive(Debug, Clone, Copy)]
pub enum Login {
    Success = 0,
    /// Wrong user name or password.
    Failure = 1,
    /// Refused unchecked: the address or user is locked out.
    Locked = 2,
    /// Refused unchecked: too many verifications in flight.
    Busy = 3,
    /// The form's CSRF token did not match.
    CsrfFailed = 4,
}
const LOGIN_OUTCOMES: [&str; 5] = ["success", "failure", "locked", "busy", "csrf_failed"];

/// The outcome of an API token check (`nbgate_token_checks_total{outcome}`).
#[derive(Debug, Clone, Copy)]
pub enum TokenCheck {
    Valid = 0,
    Invalid = 1,
    Locked = 2,
    Busy = 3,
}
const TOKEN_OUTCOMES: [&str; 4] = ["valid", "invalid", "locked", "busy"];

/// Why a client was refused by policy (`nbgate_denied_total{reason}`); the
/// reasons are the audit log's.
const DENIED_REASONS: [&str; 4] = [
    "not_allowed",
    "too_many_connections",
    "proxy_protocol_from_untrusted_peer",
    "other",
];

/// Rare events: one shared atomic each is cheap enough.
struct Events {
    logins: [AtomicU64; LOGIN_OUTCOMES.len()],
    token_checks: [AtomicU64; TOKEN_OUTCOMES.len()],
    lockouts: AtomicU64,
    rate_limited: AtomicU64,
    denied: [AtomicU64; DENIED_REASONS.len()],
    reloads: [AtomicU64; 2],
    last_reload: Outcome,
    renewals: [AtomicU64; 2],
    last_renewal: Outcome,
    /// When the ACME task next renews, Unix seconds; 0 while not scheduled.
    next_renewal: AtomicU64,
    upstream_connects: [AtomicU64; 2],
    connect_latency: [AtomicU64; CONNECT_SLOTS],
    connect_sum_us: AtomicU64,
    /// Audit events written to the audit file, and lost (queue full or a
    /// failed write).
    audit_written: AtomicU64,
    audit_lost: AtomicU64,
}

/// When something last finished, and whether it succeeded.
struct Outcome {
    unix_secs: AtomicU64,
    ok: AtomicBool,
}

impl Outcome {
    const fn new() -> Self {
        Outcome {
            unix_secs: AtomicU64::new(0),
            ok: AtomicBool::new(false),
        }
    }

    fn set(&self, ok: bool) {
        self.ok.store(ok, Relaxed);
        self.unix_secs.store(unix_now(), Relaxed);
    }
}

static EVENTS: Events = Events {
    logins: [const { AtomicU64::new(0) }; LOGIN_OUTCOMES.len()],
    token_checks: [const { AtomicU64::new(0) }; TOKEN_OUTCOMES.len()],
    lockouts: AtomicU64::new(0),
    rate_limited: AtomicU64::new(0),
    denied: [const { AtomicU64::new(0) }; DENIED_REASONS.len()],
    reloads: [const { AtomicU64::new(0) }; 2],
    last_reload: Outcome::new(),
    renewals: [const { AtomicU64::new(0) }; 2],
    last_renewal: Outcome::new(),
    next_renewal: AtomicU64::new(0),
    upstream_connects: [const { AtomicU64::new(0) }; 2],
    connect_latency: [const { AtomicU64::new(0) }; CONNECT_SLOTS],
    connect_sum_us: AtomicU64::new(0),
    audit_written: AtomicU64::new(0),
    audit_lost: AtomicU64::new(0),
};

static STARTED: AtomicU64 = AtomicU64::new(0);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A password login finished with `outcome`.
pub fn login(outcome: Login) {
    EVENTS.logins[outcome as usize].fetch_add(1, Relaxed);
}

/// An API token was checked (not one accepted from the recently-verified cache).
pub fn token_check(outcome: TokenCheck) {
    EVENTS.token_checks[outcome as usize].fetch_add(1, Relaxed);
}

/// An address or user name was locked out.
/// Audit events written to the audit file.
pub fn audit_written(n: u64) {
    EVENTS.audit_written.fetch_add(n, Relaxed);
}

/// Audit events that could not reach the audit file.
pub fn audit_lost(n: u64) {
    EVENTS.audit_lost.fetch_add(n, Relaxed);
}

pub fn lockout() {
    EVENTS.lockouts.fetch_add(1, Relaxed);
}

/// A request was refused by a rate limit (429).
pub fn rate_limited() {
    EVENTS.rate_limited.fetch_add(1, Relaxed);
}

/// A client was refused by policy; `reason` as in the audit log.
pub fn denied(reason: &str) {
    let i = DENIED_REASONS[..DENIED_REASONS.len() - 1]
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(DENIED_REASONS.len() - 1);
    EVENTS.denied[i].fetch_add(1, Relaxed);
}

/// A configuration reload (SIGHUP) finished: `ok` when the new
/// configuration is in force, `false` when it was rejected.
pub fn reload_finished(ok: bool) {
    EVENTS.reloads[usize::from(ok)].fetch_add(1, Relaxed);
    EVENTS.last_reload.set(ok);
}

/// An ACME order (first certificate or renewal) finished.
pub fn renewal_finished(ok: bool) {
    EVENTS.renewals[usize::from(ok)].fetch_add(1, Relaxed);
    EVENTS.last_renewal.set(ok);
}

/// The ACME task scheduled the next renewal for `at` (a short-lived
/// certificate renews every few days: the time is worth watching).
pub fn renewal_scheduled(at: SystemTime) {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    EVENTS.next_renewal.store(secs.max(1), Relaxed);
}

/// A connection to Jupyter was attempted and took `elapsed`.
pub fn upstream_connect(elapsed: Duration, ok: bool) {
    EVENTS.upstream_connects[usize::from(ok)].fetch_add(1, Relaxed);
    if ok {
        let us = micros(elapsed);
        EVENTS.connect_latency[slot(&CONNECT_BOUNDS_US, us)].fetch_add(1, Relaxed);
        EVENTS.connect_sum_us.fetch_add(us, Relaxed);
    }
}

/// Records the start time (`nbgate_start_time_seconds`).
pub fn started() {
    STARTED.store(unix_now(), Relaxed);
}

/// What the server knows at scrape time and the counters do not hold.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub open_connections: usize,
    pub tunnels: usize,
    /// The served certificate's notAfter.
    pub certificate_not_after: Option<SystemTime>,
    /// Whether Jupyter answered a connect just now.
    pub upstream_up: bool,
}

/// The Prometheus text exposition of every metric.
pub fn render(gauges: &Gauges) -> String {
    let mut registry = Registry::with_prefix("nbgate");
    registry.register_collector(Box::new(Scrape(gauges.clone())));
    let mut out = String::with_capacity(8 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

/// One scrape's view: shards summed, events read.
#[derive(Debug)]
struct Scrape(Gauges);

fn sum(f: impl Fn(&Shard) -> &AtomicU64) -> u64 {
    SHARD.iter().map(|s| f(s).load(Relaxed)).sum()
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// Cumulative `(upper bound in seconds, count)` pairs, +Inf last.
fn buckets(bounds_us: &[u64], counts: &[u64]) -> Vec<(f64, u64)> {
    let mut total = 0;
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            total += c;
            let bound = bounds_us.get(i).map_or(f64::INFINITY, |&b| secs(b));
            (bound, total)
        })
        .collect()
}

type Enc<'a> = DescriptorEncoder<'a>;

fn counter(e: &mut Enc<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge<T>(e: &mut Enc<'_>, name: &str, help: &str, v: T) -> std::fmt::Result
where
    ConstGauge<T>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A counter family with one label; `values[i]` belongs to `labels[i]`.
fn counters(
    e: &mut Enc<'_>,
    name: &str,
    help: &str,
    label: &str,
    labels: &[&str],
    values: &[u64],
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (l, v) in labels.iter().zip(values) {
        let set = [(label, *l)];
        ConstCounter::new(*v).encode(m.encode_family(&set)?)?;
    }
    Ok(())
}

fn load_all<const N: usize>(a: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| a[i].load(Relaxed))
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let g = &self.0;
        let info = [("version", env!("CARGO_PKG_VERSION"))];
        let mut m = e.encode_descriptor("build", "nbgate's version", None, MetricType::Info)?;
        m.encode_info(&info)?;
        gauge(
            &mut e,
            "start_time_seconds",
            "When nbgate started, Unix seconds",
            STARTED.load(Relaxed) as i64,
        )?;

        let mut m = e.encode_descriptor(
            "requests",
            "Requests answered, by kind (own_page, proxied, websocket) and status class",
            None,
            MetricType::Counter,
        )?;
        for (k, kind) in KINDS {
            for (c, class) in CLASSES.iter().enumerate() {
                let set = [("kind", kind), ("code", *class)];
                let v = sum(|s| &s.requests[k as usize][c]);
                ConstCounter::new(v).encode(m.encode_family(&set)?)?;
            }
        }
        let mut m = e.encode_descriptor(
            "request_duration_seconds",
            "Time from a request's arrival to its response head, by kind",
            None,
            MetricType::Histogram,
        )?;
        for (k, kind) in KINDS {
            let counts: Vec<u64> = (0..LATENCY_SLOTS)
                .map(|i| sum(|s| &s.latency[k as usize][i]))
                .collect();
            let count = counts.iter().sum();
            let total = secs(sum(|s| &s.latency_sum_us[k as usize]));
            let set = [("kind", kind)];
            m.encode_family(&set)?.encode_histogram::<NoLabelSet>(
                total,
                count,
                &buckets(&LATENCY_BOUNDS_US, &counts),
                None,
            )?;
        }
        counter(
            &mut e,
            "received_bytes",
            "Bytes received from clients (after TLS), tunnels included",
            sum(|s| &s.bytes_received),
        )?;
        counter(
            &mut e,
            "sent_bytes",
            "Bytes sent to clients (before TLS), tunnels included",
            sum(|s| &s.bytes_sent),
        )?;
        gauge(
            &mut e,
            "open_connections",
            "Client connections open now",
            g.open_connections as i64,
        )?;
        gauge(
            &mut e,
            "open_tunnels",
            "WebSocket tunnels open now",
            g.tunnels as i64,
        )?;

        let ev = &EVENTS;
        counters(
            &mut e,
            "logins",
            "Password logins, by outcome",
            "outcome",
            &LOGIN_OUTCOMES,
            &load_all(&ev.logins),
        )?;
        counters(
            &mut e,
            "token_checks",
            "API token verifications, by outcome",
            "outcome",
            &TOKEN_OUTCOMES,
            &load_all(&ev.token_checks),
        )?;
        counter(
            &mut e,
            "lockouts",
            "Addresses or user names locked out after failed attempts",
            ev.lockouts.load(Relaxed),
        )?;
        counter(
            &mut e,
            "audit_events_written",
            "Audit events appended to the audit file",
            ev.audit_written.load(Relaxed),
        )?;
        counter(
            &mut e,
            "audit_events_lost",
            "Audit events that could not reach the audit file (queue full or write failed)",
            ev.audit_lost.load(Relaxed),
        )?;
        counter(
            &mut e,
            "rate_limited",
            "Requests refused by a rate limit (429)",
            ev.rate_limited.load(Relaxed),
        )?;
        counters(
            &mut e,
            "denied",
            "Clients refused by policy, by reason",
            "reason",
            &DENIED_REASONS,
            &load_all(&ev.denied),
        )?;

        if let Some(t) = g.certificate_not_after {
            let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            gauge(
                &mut e,
                "certificate_not_after_seconds",
                "When the served certificate expires, Unix seconds",
                secs as i64,
            )?;
        }
        counters(
            &mut e,
            "certificate_renewals",
            "ACME orders (first certificate or renewal), by result",
            "result",
            &["failure", "success"],
            &load_all(&ev.renewals),
        )?;
        outcome(
            &mut e,
            "certificate_renewal",
            "ACME order",
            &ev.last_renewal,
        )?;
        let next = ev.next_renewal.load(Relaxed);
        if next > 0 {
            gauge(
                &mut e,
                "certificate_next_renewal_seconds",
                "When the ACME task renews the certificate next, Unix seconds",
                next as i64,
            )?;
        }

        gauge(
            &mut e,
            "upstream_up",
            "1 when Jupyter answered a connect at this scrape, else 0",
            i64::from(g.upstream_up),
        )?;
        counters(
            &mut e,
            "upstream_connects",
            "Connections nbgate opened to Jupyter, by result",
            "result",
            &["failure", "success"],
            &load_all(&ev.upstream_connects),
        )?;
        let counts = load_all(&ev.connect_latency);
        let mut m = e.encode_descriptor(
            "upstream_connect_duration_seconds",
            "Time to open a connection to Jupyter",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<NoLabelSet>(
            secs(ev.connect_sum_us.load(Relaxed)),
            counts.iter().sum(),
            &buckets(&CONNECT_BOUNDS_US, &counts),
            None,
        )?;

        counters(
            &mut e,
            "reloads",
            "Configuration reloads (SIGHUP), by result",
            "result",
            &["failure", "success"],
            &load_all(&ev.reloads),
        )?;
        outcome(&mut e, "reload", "configuration reload", &ev.last_reload)?;
        Ok(())
    }
}

/// `<name>_last_timestamp_seconds` and `<name>_last_success` of `o`, once
/// it happened at least once.
fn outcome(e: &mut Enc<'_>, name: &str, what: &str, o: &Outcome) -> std::fmt::Result {
    let at = o.unix_secs.load(Relaxed);
    if at == 0 {
        return Ok(());
    }
    gauge(
        e,
        &format!("{name}_last_timestamp_seconds"),
        &format!("When the last {what} finished, Unix seconds"),
        at as i64,
    )?;
    gauge(
        e,
        &format!("{name}_last_success"),
        &format!("1 when the last {what} succeeded, else 0"),
        i64::from(o.ok.load(Relaxed)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_follow_prometheus_conventions() {
        enable();
        request(false, 200, Instant::now());
        request(true, 404, Instant::now());
        login(Login::Failure);
        denied("not_allowed");
        denied("something new");
        let text = render(&Gauges {
            open_connections: 3,
            tunnels: 1,
            certificate_not_after: Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000)),
            upstream_up: true,
        });
        for line in [
            "nbgate_build_info{version=\"",
            "nbgate_requests_total{kind=\"proxied\",code=\"2xx\"} ",
            "nbgate_requests_total{kind=\"own_page\",code=\"4xx\"} ",
            "nbgate_request_duration_seconds_bucket{kind=\"proxied\",le=\"+Inf\"} ",
            "nbgate_received_bytes_total ",
            "nbgate_open_connections 3",
            "nbgate_open_tunnels 1",
            "nbgate_logins_total{outcome=\"failure\"} ",
            "nbgate_denied_total{reason=\"other\"} ",
            "nbgate_certificate_not_after_seconds 2000000000",
            "nbgate_upstream_up 1",
            "nbgate_upstream_connect_duration_seconds_count ",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(l.starts_with("nbgate_"), "{l}");
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_infinity() {
        let b = buckets(&[1_000, 10_000], &[2, 3, 4]);
        assert_eq!(b, vec![(0.001, 2), (0.01, 5), (f64::INFINITY, 9)]);
    }

    #[test]
    fn each_thread_writes_its_own_shard() {
        let here = shard() as *const Shard as usize;
        let there = std::thread::spawn(|| shard() as *const Shard as usize)
            .join()
            .expect("thread");
        assert_ne!(here, there);
        assert_eq!(std::mem::align_of::<Shard>(), 128);
    }
}
