//! Listening sockets, the accept loops, per-connection tasks and graceful
//! shutdown.
//!
//! The accept loop only accepts: the TLS handshake (and the sniffing of a
//! plain-HTTP request on the TLS port) runs in the connection's own task
//! under a timeout, so a slow or malicious client can never stall accepting.
//! The number of open connections is capped by a semaphore taken *before*
//! `accept`, so at the cap new clients wait in the kernel backlog instead of
//! costing memory here.
//!
//! Connections are served by one single-threaded runtime per core, each
//! accepting on the same sockets, so a connection and its upstream
//! connections never change threads (`spawn_worker` says why). A worker
//! hands what it accepts to the worker with the fewest open connections
//! (`balance`).

mod admin;
mod balance;
mod coalesce;
mod frame_budget;
pub mod h2_stream;
mod http2;
mod send_deadline;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::send_deadline::SendDeadline;
use crate::auth::SessionCache;
use crate::config::Config;
use crate::policy::{self, ProxyHeader};
use crate::proxy::body::RequestBody;
use crate::proxy::guard::SWEEP_EVERY;
use crate::proxy::{client_ip, https_redirect, ConnInfo, Gateway};
use crate::reload::Reloader;
use crate::systemd::{self, Liveness};
use crate::telemetry::Chain;
use crate::tls::challenge::{self, Challenges};
use crate::tls::{self, CertResolver};
use balance::{Balancer, Open};

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Activation(#[from] systemd::ActivationError),
    #[error("cannot use a socket systemd passed")]
    Register(#[source] std::io::Error),
}

/// The bound sockets. Bound before `run` so that a test (or systemd) can
/// bind port 0 and learn the real port, and so that bind errors surface
/// before anything else starts.
pub struct Listeners {
    pub https: Vec<TcpListener>,
    pub http: Vec<TcpListener>,
    /// `[admin] listen`, when set (never socket-activated).
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds every configured listener and logs each bound address, or,
    /// under socket activation (`LISTEN_FDS`), takes the sockets systemd
    /// passed instead: those win over `server.listen` and
    /// `server.http_listen`, and a configured address that none of them has
    /// is named in a warning (`systemd::assign` says how roles are decided).
    ///
    /// # Errors
    /// `ServerError::Bind` naming the address that could not be bound;
    /// `ServerError::Activation` naming a passed socket nbgate cannot use.
    pub async fn bind(config: &Config) -> Result<Self, ServerError> {
        let s = &config.server;
        let admin = match &config.admin {
            Some(a) => Some(bind_one(a.listen).await?),
            None => None,
        };
        if let Some(passed) = systemd::take_listeners(&s.listen, &s.http_listen)? {
            tracing::info!(
                https = passed.https.len(),
                http = passed.http.len(),
                matched_by = ?passed.matched_by,
                "socket activation: serving the sockets systemd passed"
            );
            for (key, addr) in &passed.unserved {
                tracing::warn!(
                    "{key} = {addr}: no socket systemd passed has this address; \
                     nbgate listens only on the sockets systemd passed"
                );
            }
            let register = |l: Vec<std::net::TcpListener>| {
                l.into_iter()
                    .map(|l| TcpListener::from_std(l).map_err(ServerError::Register))
                    .collect::<Result<Vec<_>, _>>()
            };
            return Ok(Listeners {
                https: register(passed.https)?,
                http: register(passed.http)?,
                admin,
            });
        }
        let mut https = Vec::new();
        for addr in &config.server.listen {
            https.push(bind_one(*addr).await?);
        }
        let mut http = Vec::new();
        for addr in &config.server.http_listen {
            http.push(bind_one(*addr).await?);
        }
        Ok(Listeners { https, http, admin })
    }

    /// The port plain-HTTP redirects point at: the first HTTPS listener's.
    fn https_port(&self) -> u16 {
        self.https
            .first()
            .and_then(|l| l.local_addr().ok())
            .map_or(443, |a| a.port())
    }
}

async fn bind_one(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|source| ServerError::Bind { addr, source })?;
    socket
        .set_reuseaddr(true)
        .map_err(|source| ServerError::Bind { addr, source })?;
    socket
        .bind(addr)
        .map_err(|source| ServerError::Bind { addr, source })?;
    socket
        .listen(1024)
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Runs until `shutdown` resolves, then drains: listeners close at once (new
/// connections are refused), WebSocket tunnels get a close frame, in-flight
/// requests get up to `server.shutdown_grace` to finish.
///
/// Under systemd (`NOTIFY_SOCKET`) it sends `READY=1` once every worker
/// runs its accept loops (the certificate was loaded before: in ACME mode
/// the stored one or the temporary one, since the order itself needs these
/// listeners to answer its challenges), `STOPPING=1` when the drain starts,
/// `STATUS=` lines, and watchdog pings while every worker and accept loop
/// responds (`systemd::keep_alive`). Meanwhile `reloader` puts a reloaded
/// configuration in force on each SIGHUP.
pub async fn run(
    config: Arc<Config>,
    listeners: Listeners,
    reloader: Reloader,
    resolver: Arc<CertResolver>,
    auth: Arc<crate::auth::Authenticator>,
    shutdown: impl Future<Output = ()>,
) {
    let gateway = Arc::new(Gateway::new(Arc::clone(&config), auth));
    let acme_challenges = resolver.challenges().cloned();
    let acceptor = TlsAcceptor::from(tls::server_config(Arc::clone(&resolver)));
    let https_port = listeners.https_port();
    let limit = Arc::new(Semaphore::new(config.server.max_connections));
    let graceful = Arc::new(GracefulShutdown::new());
    let stop = CancellationToken::new();
    // Worker runtimes keep running their connections until the drain below
    // is over; this stops them.
    let finished = CancellationToken::new();
    let tracker = TaskTracker::new();

    let listening: Vec<(&'static str, SocketAddr)> = listeners
        .https
        .iter()
        .map(|l| ("https", l))
        .chain(listeners.http.iter().map(|l| ("http", l)))
        .filter_map(|(scheme, l)| l.local_addr().ok().map(|a| (scheme, a)))
        .collect();
    let mut liveness = Liveness::default();
    liveness.watch_runtime(tokio::runtime::Handle::current());
    let tls = listeners
        .https
        .into_iter()
        .map(|l| (l, Some(acceptor.clone())));
    let plain = listeners.http.into_iter().map(|l| (l, None));
    let mut sockets = Vec::new();
    for (listener, tls_acceptor) in tls.chain(plain) {
        log_listening(
            &listener,
            if tls_acceptor.is_some() {
                "https"
            } else {
                "http"
            },
        );
        let ctx = ConnCtx {
            gateway: Arc::clone(&gateway),
            acceptor: tls_acceptor,
            https_port,
            acme_challenges: acme_challenges.clone(),
            stop: stop.clone(),
        };
        match listener.into_std() {
            Ok(std) => sockets.push((std, ctx)),
            Err(e) => tracing::error!(error = %e, "cannot take over a listening socket"),
        }
    }
    // One accept loop per socket per worker: the extra workers accept on
    // duplicates of the same sockets (`try_clone`), and each worker takes
    // connections handed over by the others from its inbox. Worker 0 is the
    // calling runtime.
    let (balancer, inboxes) = Balancer::new(worker_count());
    let mut inboxes = inboxes.into_iter();
    let own_inbox = inboxes.next();
    let mut workers = Vec::new();
    for (i, inbox) in inboxes.enumerate() {
        let index = i + 1;
        let accept = Accept {
            worker: index,
            balancer: Arc::clone(&balancer),
            limit: Arc::clone(&limit),
            graceful: Arc::clone(&graceful),
            stop: stop.clone(),
        };
        let mut loops: Vec<WorkerLoop> = Vec::new();
        for (std, ctx) in &sockets {
            match std.try_clone() {
                Ok(dup) => loops.push(Box::pin(tracker.track_future(liveness.track(accept_on(
                    dup,
                    ctx.clone(),
                    accept.clone(),
                ))))),
                Err(e) => tracing::warn!(error = %e, "cannot share a listening socket"),
            }
        }
        loops.push(Box::pin(tracker.track_future(take_handovers(
            inbox,
            stop.clone(),
            serve_handover,
        ))));
        match spawn_worker(index, loops, finished.clone()) {
            Ok((thread, runtime)) => {
                workers.push(thread);
                liveness.watch_runtime(runtime);
            }
            // Fewer workers, still serving: the calling runtime accepts too.
            Err(e) => {
                balancer.retire(index);
                tracing::warn!(error = %e, "cannot start a worker thread");
            }
        }
    }
    let status = StatusSource {
        listening,
        resolver: Arc::clone(&resolver),
        balancer: Arc::clone(&balancer),
        gateway: Arc::clone(&gateway),
    };
    if let (Some(listener), Some(a)) = (listeners.admin, &config.admin) {
        admin::spawn(
            listener,
            &config,
            a,
            &resolver,
            status.clone(),
            stop.clone(),
        );
    }
    {
        // Scoped: the drain below needs `graceful` back from every holder.
        let accept = Accept {
            worker: 0,
            balancer,
            limit: Arc::clone(&limit),
            graceful: Arc::clone(&graceful),
            stop: stop.clone(),
        };
        for (std, ctx) in sockets {
            tracker.spawn(liveness.track(accept_on(std, ctx, accept.clone())));
        }
    }
    if let Some(inbox) = own_inbox {
        tracker.spawn(take_handovers(inbox, stop.clone(), serve_handover));
    }
    // Forget rate-limit and lockout state that no longer decides anything.
    let sweeper = {
        let gateway = Arc::clone(&gateway);
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => gateway.guard().sweep(),
                    _ = stop.cancelled() => return,
                }
            }
        })
    };
    tracker.close();
    let reloads = tokio::spawn(reloader.run(Arc::clone(&gateway), stop.clone()));
    let keep_alive = tell_systemd_ready(liveness, &status, &stop).await;

    shutdown.await;
    // The grace period in force now (a reload may have changed it).
    let grace = gateway.live().config.server.shutdown_grace;
    tracing::info!(?grace, "shutting down: no new connections");
    systemd::stopping(&status.now());
    stop.cancel();
    tracker.wait().await;
    let _ = sweeper.await;
    let _ = reloads.await;
    let tunnels = gateway.tunnels.close_all();
    if tunnels > 0 {
        tracing::info!(tunnels, "closing websocket tunnels");
    }
    // Accept loops have ended; a worker thread may still be dropping the
    // last one's state for a moment.
    let mut graceful = graceful;
    for _ in 0..100 {
        match Arc::try_unwrap(graceful) {
            Ok(g) => {
                graceful = Arc::new(g);
                break;
            }
            Err(arc) => graceful = arc,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|arc| {
        // No other owner should remain; fall back to a fresh handle rather
        // than panic if that ever changes (in-flight requests are then cut
        // off at once, so say so).
        tracing::warn!("shutdown cannot wait for in-flight requests: closing them now");
        drop(arc);
        GracefulShutdown::new()
    });
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections finished"),
        Err(_) => tracing::warn!("grace period over: closing remaining connections"),
    }
    // Give tunnels a moment to flush their close frames.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while gateway.tunnels.count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some((done, task)) = keep_alive {
        // The workers stop next: a probe could not reach them any more.
        done.cancel();
        let _ = task.await;
    }
    finished.cancel();
    let joined = tokio::task::spawn_blocking(move || {
        for w in workers {
            let _ = w.join();
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(2), joined).await;
}

/// How many threads serve connections: `TOKIO_WORKER_THREADS` when set (the
/// variable tokio's multi-threaded runtime reads, so existing deployments
/// keep their setting), else one per available core.
fn worker_count() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

/// Starts a thread with its own single-threaded runtime that runs `loops`
/// and every connection they accept or are handed, until `finished` is
/// cancelled.
///
/// Why not one multi-threaded runtime: its work stealing moves a
/// connection's task and the task of its pooled upstream connection between
/// threads, so each forwarded request paid for cross-thread wake-ups (half
/// of all CPU time in the profile of issue 6). Here a connection, its HTTP/2
/// streams, its WebSocket tunnel and its upstream connections (a pool per
/// thread, `proxy::upstream`) all stay on the one thread that serves it
/// (the accepting worker first hands it to the least-loaded one, `balance`).
///
/// Returns the thread and its runtime's handle (for the watchdog's probe).
fn spawn_worker(
    index: usize,
    loops: Vec<WorkerLoop>,
    finished: CancellationToken,
) -> std::io::Result<(std::thread::JoinHandle<()>, tokio::runtime::Handle)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let thread = std::thread::Builder::new()
        .name(format!("nbgate-worker-{index}"))
        .spawn(move || {
            runtime.block_on(async move {
                for l in loops {
                    tokio::spawn(l);
                }
                finished.cancelled().await;
            });
        })?;
    Ok((thread, handle))
}

/// How long the workers may take to first run their accept loops before
/// `READY=1` is sent anyway (with the reason logged): systemd's start
/// timeout, not this, decides about a worker that never starts.
const READY_PROBE: Duration = Duration::from_secs(10);

/// Under systemd: waits until every worker runtime ran a probe task (so it
/// has polled the accept loops spawned before it, which are then
/// registered with its reactor), sends `READY=1` with the first status and
/// starts `systemd::keep_alive`. Returns what stops that task.
async fn tell_systemd_ready(
    liveness: Liveness,
    status: &StatusSource,
    stop: &CancellationToken,
) -> Option<(CancellationToken, tokio::task::JoinHandle<()>)> {
    if !systemd::enabled() {
        return None;
    }
    if let Err(e) = liveness.probe(READY_PROBE, false).await {
        tracing::warn!(error = %e, "not every worker runs yet; telling systemd ready anyway");
    }
    systemd::ready(&status.now().to_string());
    let watchdog = systemd::watchdog();
    if let Some(period) = watchdog {
        tracing::info!(
            watchdog = ?period,
            every = ?(period / 2),
            "systemd watchdog: pinging while every worker and accept loop responds"
        );
    }
    let done = CancellationToken::new();
    let status = status.clone();
    let task = tokio::spawn(systemd::keep_alive(
        liveness,
        watchdog,
        stop.clone(),
        done.clone(),
        move || status.now().to_string(),
    ));
    Some((done, task))
}

/// What `systemctl status` shows, read from counters the server keeps
/// anyway (nothing is added to the request path).
#[derive(Clone)]
struct StatusSource {
    listening: Vec<(&'static str, SocketAddr)>,
    resolver: Arc<CertResolver>,
    balancer: Arc<Balancer<Handover>>,
    gateway: Arc<Gateway>,
}

impl StatusSource {
    fn now(&self) -> systemd::Status {
        let current = self.resolver.current();
        let certificate_expires = current
            .cert
            .first()
            .and_then(|leaf| x509_parser::parse_x509_certificate(leaf.as_ref()).ok())
            .and_then(|(_, cert)| u64::try_from(cert.validity().not_after.timestamp()).ok())
            .map(|secs| std::time::UNIX_EPOCH + Duration::from_secs(secs));
        systemd::Status {
            listening: self.listening.clone(),
            certificate_expires,
            connections: self.balancer.open_total(),
            tunnels: self.gateway.tunnels.count(),
        }
    }
}

fn log_listening(listener: &TcpListener, scheme: &str) {
    match listener.local_addr() {
        Ok(addr) => tracing::info!("listening scheme={scheme} addr={addr}"),
        Err(e) => tracing::warn!(error = %e, "listener has no local address"),
    }
}

/// What a connection task needs.
#[derive(Clone)]
struct ConnCtx {
    gateway: Arc<Gateway>,
    /// `None` for the plain-HTTP redirect listener.
    acceptor: Option<TlsAcceptor>,
    https_port: u16,
    /// ACME mode: HTTP-01 answers the plain listener serves.
    acme_challenges: Option<Arc<Challenges>>,
    /// Cancelled when shutdown starts: HTTP/2 connections served by
    /// `http2` send GOAWAY then (hyper's connections hear it from their
    /// `Watcher`, which `http2` connections hold only to be waited for).
    stop: CancellationToken,
}

impl ConnCtx {
    /// The plain-HTTP listener in ACME mode answers the CA's HTTP-01
    /// validation, which comes from addresses no allowlist can know. It is
    /// open to everyone: all it serves is challenge answers and redirects
    /// to HTTPS (where the allowlist applies), never Jupyter.
    fn exempt_from_allowlist(&self) -> bool {
        self.acceptor.is_none() && self.acme_challenges.is_some()
    }
}

/// A future a worker thread runs: an accept loop or its inbox.
type WorkerLoop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What every accept loop of one worker shares.
#[derive(Clone)]
struct Accept {
    /// This worker's index in `balancer`.
    worker: usize,
    balancer: Arc<Balancer<Handover>>,
    /// `server.max_connections`, over all workers.
    limit: Arc<Semaphore>,
    graceful: Arc<GracefulShutdown>,
    stop: CancellationToken,
}

/// An accepted connection on its way to the worker that serves it.
struct Handover {
    tcp: std::net::TcpStream,
    peer: SocketAddr,
    ctx: ConnCtx,
    permit: OwnedSemaphorePermit,
    watcher: Watcher,
    open: Open<Handover>,
}

/// `accept_loop` on a socket taken out of (or duplicated from) another
/// runtime, registered with the runtime this runs on.
async fn accept_on(listener: std::net::TcpListener, ctx: ConnCtx, accept: Accept) {
    match TcpListener::from_std(listener) {
        Ok(l) => accept_loop(l, ctx, accept).await,
        Err(e) => tracing::error!(error = %e, "cannot register a listening socket"),
    }
}

/// Serves the connections other workers hand to this one, until `stop`;
/// then serves those already handed over, as the accepting worker would
/// have (under the shutdown already signalled).
async fn take_handovers<T>(
    mut inbox: mpsc::UnboundedReceiver<T>,
    stop: CancellationToken,
    serve: impl Fn(T),
) {
    loop {
        let h = tokio::select! {
            h = inbox.recv() => match h {
                Some(h) => h,
                None => return,
            },
            _ = stop.cancelled() => break,
        };
        serve(h);
    }
    // A connection queued here was accepted before the stop: dropping it
    // would reset a client that may already have sent its ClientHello (and
    // one pushed while the receiver was being dropped would stay in the
    // channel, holding its permit and watcher, so the drain would wait out
    // the whole grace). After `close`, a hand-over still on its way fails
    // and its sender serves the connection itself; `recv` returns `None`
    // only once no send is in progress.
    inbox.close();
    while let Some(h) = inbox.recv().await {
        serve(h);
    }
}

fn serve_handover(h: Handover) {
    match TcpStream::from_std(h.tcp) {
        Ok(tcp) => spawn_connection(tcp, h.peer, h.ctx, h.permit, h.watcher, h.open),
        Err(e) => tracing::warn!(error = %e, "cannot register a handed-over connection"),
    }
}

/// Serves one connection in a task of the current worker; the permit and
/// the open-count are released when it ends.
fn spawn_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: ConnCtx,
    permit: OwnedSemaphorePermit,
    watcher: Watcher,
    open: Open<Handover>,
) {
    tokio::spawn(async move {
        let _permit = permit;
        let _open = open;
        tracing::debug!(
            %peer,
            thread = std::thread::current().name().unwrap_or("unnamed"),
            "connection served"
        );
        serve_connection(tcp, peer, ctx, watcher).await;
    });
}

async fn accept_loop(listener: TcpListener, ctx: ConnCtx, accept: Accept) {
    let Accept {
        worker: me,
        balancer,
        limit,
        graceful,
        stop,
    } = accept;
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&limit).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.cancelled() => return,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        // The allowlist runs on the bare socket, before any TLS work: a
        // refused client costs an accept and a close. A trusted proxy speaks
        // for others; their addresses are checked once known.
        let peer_ip = client_ip(peer);
        let guard = ctx.gateway.guard();
        let trusted = guard.is_trusted(peer_ip);
        if guard.proxy_protocol && !trusted {
            guard.audit_refusal(peer_ip, "proxy_protocol_from_untrusted_peer");
            continue;
        }
        if !trusted && !ctx.exempt_from_allowlist() && !guard.access.permits(peer_ip) {
            guard.audit_refusal(peer_ip, "not_allowed");
            continue;
        }
        // Subscribed here, in the loop, so that no connection accepted
        // before shutdown can miss the shutdown signal.
        let watcher = graceful.watcher();
        let target = balancer.pick(me);
        let open = balancer.open(target);
        tracing::debug!(%peer, accepted_by = me, worker = target, "connection accepted");
        if target == me {
            spawn_connection(tcp, peer, ctx.clone(), permit, watcher, open);
            continue;
        }
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot hand over a connection");
                continue;
            }
        };
        let handover = Handover {
            tcp,
            peer,
            ctx: ctx.clone(),
            permit,
            watcher,
            open,
        };
        if let Err(h) = balancer.hand_over(target, handover) {
            // That worker is gone: serve the connection here.
            tracing::debug!(%peer, worker = target, "worker gone: connection served here");
            match TcpStream::from_std(h.tcp) {
                Ok(tcp) => {
                    spawn_connection(tcp, peer, h.ctx, h.permit, h.watcher, balancer.open(me));
                }
                Err(e) => tracing::warn!(%peer, error = %e, "cannot register a connection"),
            }
        }
    }
}

/// The first byte of a TLS connection is a handshake record (0x16).
const TLS_HANDSHAKE: u8 = 0x16;

async fn serve_connection(mut tcp: TcpStream, peer: SocketAddr, ctx: ConnCtx, watcher: Watcher) {
    let _ = tcp.set_nodelay(true);
    // The configuration in force when the connection arrived decides its
    // limits for its whole life (a reload applies to later connections).
    let live = ctx.gateway.live();
    let config = Arc::clone(&live.config);
    let guard = Arc::clone(&live.guard);
    drop(live);
    let handshake_timeout = config.server.tls_handshake_timeout;
    // One budget for PROXY header, sniffing and TLS handshake together: a
    // slow peer cannot hold a connection for a multiple of the timeout.
    let deadline = tokio::time::Instant::now() + handshake_timeout;
    let peer_ip = client_ip(peer);
    let client = if guard.proxy_protocol {
        // Only trusted peers got here (accept loop). Their header names the
        // client, which the allowlist must now accept.
        let client = match policy::read_header(&mut tcp, handshake_timeout).await {
            Ok(ProxyHeader::Proxied { source, .. }) => client_ip(source),
            Ok(ProxyHeader::Local) => peer_ip,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "no valid PROXY protocol header");
                return;
            }
        };
        if !ctx.exempt_from_allowlist() && !guard.access.permits(client) {
            guard.audit_refusal(client, "not_allowed");
            return;
        }
        client
    } else {
        peer_ip
    };
    // A trusted proxy without PROXY protocol carries many clients on its
    // connections; they are rate-limited per request instead.
    let _slot = if guard.proxy_protocol || !guard.is_trusted(peer_ip) {
        match guard.open_connection(client) {
            Some(slot) => Some(slot),
            None => {
                guard.audit_refusal(client, "too_many_connections");
                return;
            }
        }
    } else {
        None
    };
    let conn = ConnInfo { peer, client };
    let Some(acceptor) = ctx.acceptor.clone() else {
        serve_plain_redirect(tcp, ctx, &config, watcher).await;
        return;
    };
    let mut first = [0u8; 1];
    let sniff = tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await;
    match sniff {
        Ok(Ok(1)) if first[0] != TLS_HANDSHAKE => {
            // Someone typed http://host:port: answer with a redirect rather
            // than a TLS alert the browser shows as a broken page.
            serve_plain_redirect(tcp, ctx, &config, watcher).await;
            return;
        }
        Ok(Ok(1)) => {}
        _ => return,
    }
    // Under TLS, so that the clock sees what the kernel takes rather than
    // rustls's buffer filling and draining (`server::send_deadline`).
    let tcp = SendDeadline::new(tcp, config.server.send_timeout);
    let sent = tcp.sent();
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "tls handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "tls handshake timed out");
            return;
        }
    };
    if challenge::is_acme_tls_alpn(tls.get_ref().1.alpn_protocol()) {
        // A TLS-ALPN-01 validation handshake (RFC 8737 §3): it is complete
        // once the certificate was presented; it never carries HTTP.
        let mut tls = tls;
        let _ = tokio::time::timeout(
            handshake_timeout,
            tokio::io::AsyncWriteExt::shutdown(&mut tls),
        )
        .await;
        return;
    }
    let gateway = Arc::clone(&ctx.gateway);
    let sessions = Arc::new(SessionCache::default());
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let tls = crate::metrics::CountedIo::new(tls);
    if h2 {
        let settings = http2_settings(&config);
        let served = http2::serve(tls, &settings, sent, ctx.stop.clone(), move |req| {
            // Boxed once here: the stream's task cell would otherwise hold
            // (and tokio move) the ~2.4 KB request state; moving a pointer
            // saves 4% of a proxied HTTP/2 request's instructions
            // (callgrind, fix 9).
            let handled = Box::pin(gateway.handle(req, conn, Arc::clone(&sessions)));
            async move {
                match handled.await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            }
        })
        .await;
        if let Err(e) = served {
            tracing::debug!(%peer, error = %Chain(&e), "connection ended with error");
        }
        // Held until here: the shutdown drain waits for this connection.
        drop(watcher);
        return;
    }
    // Everything else is HTTP/1.1. A client that sends the HTTP/2 preface
    // without having negotiated h2 is refused (the connection is closed):
    // over TLS, HTTP/2 is only ever chosen by ALPN (RFC 9113 §3.2; prior
    // knowledge, §3.3, is for cleartext), so HTTP/2 has one implementation,
    // `server::http2`, which the hostile battery covers.
    let builder = http1_builder(&config);
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        // Boxed once here: hyper moves the service future whole into its
        // connection's state and tokio moves that inside its task cell.
        // No wrapping `async` block: it would copy the state once more.
        Box::pin(gateway.handle(req.map(RequestBody::from), conn, Arc::clone(&sessions)))
    });
    let connection = builder
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    // At shutdown: finish the request in progress, then close (hyper's
    // graceful shutdown of an HTTP/1.1 connection).
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = ctx.stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(%peer, error = %Chain(&e), "connection ended with error");
    }
    // Held until here: the shutdown drain waits for this connection.
    drop(watcher);
}

/// The HTTP/2 settings of connections that negotiated h2 (`http2`).
fn http2_settings(config: &Config) -> http2::Settings {
    let s = &config.server;
    http2::Settings {
        max_header_list_size: u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX),
        max_concurrent_streams: HTTP2_MAX_STREAMS,
        keep_alive_interval: HTTP2_KEEP_ALIVE_INTERVAL,
        keep_alive_timeout: HTTP2_KEEP_ALIVE_TIMEOUT,
        preface_timeout: s.header_read_timeout,
        idle_timeout: s.header_read_timeout,
        send_timeout: s.send_timeout,
    }
}

/// Streams a client may have open at once on one HTTP/2 connection.
const HTTP2_MAX_STREAMS: u32 = 256;
/// A PING after this long without a request or request data from the peer;
/// the connection is closed when neither its answer nor anything else comes
/// within the timeout (a dead peer behind a NAT, a pulled cable).
const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The HTTP/1.1 settings of every TLS connection that did not negotiate h2.
fn http1_builder(config: &Config) -> hyper::server::conn::http1::Builder {
    let s = &config.server;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Slowloris: a client must finish its headers within this time (the
        // timer also runs while a keep-alive connection waits for the next
        // request, which closes idle keep-alive connections).
        .header_read_timeout(s.header_read_timeout)
        // 431 for a head larger than this, whether it arrived in pieces
        // or in one read (the buffer limit alone is checked only on a
        // head still incomplete).
        .max_header_size(s.max_header_bytes)
        .max_buf_size(s.max_header_bytes.max(8192))
        .max_headers(s.max_headers);
    builder
}

async fn serve_plain_redirect(tcp: TcpStream, ctx: ConnCtx, config: &Config, watcher: Watcher) {
    let port = ctx.https_port;
    let acme = ctx.acme_challenges.clone();
    let service = service_fn(move |req| {
        // HTTP-01 answers need no login and no redirect (RFC 8555 §8.3);
        // everything else on plain HTTP is redirected.
        let answer = acme.as_deref().and_then(|c| acme_http01_answer(c, &req));
        async move {
            Ok::<_, std::convert::Infallible>(answer.unwrap_or_else(|| https_redirect(&req, port)))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.server.header_read_timeout)
        .max_header_size(config.server.max_header_bytes)
        .max_buf_size(config.server.max_header_bytes.max(8192))
        .keep_alive(false);
    let tcp = SendDeadline::new(tcp, config.server.send_timeout);
    let conn = builder.serve_connection(TokioIo::new(tcp), service);
    let _ = watcher.watch(conn).await;
}

/// The HTTP-01 response for a request under `/.well-known/acme-challenge/`:
/// the key authorization for a pending token, 404 for any other token.
/// `None` for every other path.
fn acme_http01_answer<B>(
    challenges: &Challenges,
    req: &hyper::Request<B>,
) -> Option<hyper::Response<crate::proxy::body::ProxyBody>> {
    if !req.uri().path().starts_with(challenge::HTTP01_PREFIX) {
        return None;
    }
    let answer = challenge::http01_token(req.uri().path()).and_then(|t| challenges.http01(t));
    let (status, body) = match answer {
        Some(key_auth) => (hyper::StatusCode::OK, key_auth),
        None => (hyper::StatusCode::NOT_FOUND, String::new()),
    };
    let mut resp = hyper::Response::new(crate::proxy::body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn connections_handed_over_before_the_stop_are_all_served() {
        let (tx, rx) = mpsc::unbounded_channel();
        for i in 0..8 {
            tx.send(i).unwrap();
        }
        let stop = CancellationToken::new();
        stop.cancel();
        let served = Mutex::new(Vec::new());
        take_handovers(rx, stop, |i| served.lock().unwrap().push(i)).await;
        assert_eq!(*served.lock().unwrap(), (0..8).collect::<Vec<_>>());
        // The inbox is closed: a late hand-over fails, and its sender serves it.
        assert!(tx.send(8).is_err());
    }
}
