//! The comparison harness of issue 6: nbgate against nginx, Caddy and a
//! direct connection, measured side by side in one run.
//!
//! Commands (through `cargo bench --bench loadgen -- COMMAND`, or the
//! built binary; `benches/run.sh` is the documented entry point):
//! - `run [--quick] [--venv DIR] [--out DIR] [--only m1,m2] [--contenders a,b]`:
//!   the whole comparison; writes `REPORT.md`, `results.json` and charts.
//! - `upstream --port P`: the fast upstream (started by `run` itself).
//!
//! With no command, as `cargo test --all-targets` runs bench targets, it
//! prints a hint and exits 0 at once.
//!
//! Modules: `net` (client connections, login), `upstream` (the fast
//! upstream), `procs` (contender processes and their configs), `load` (one
//! function per measure), `report` (REPORT.md and charts).

mod load;
mod net;
mod procs;
mod report;
mod upstream;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};

use crate::net::{BoxError, Target};
use crate::procs::{Backend, Contender, Env, Kind, Proc};

/// Every measure, in run order.
pub const MEASURES: [&str; 12] = [
    "h1",
    "h2",
    "tls_full",
    "tls_resumed",
    "tls_resumed_x25519",
    "ws_rtt",
    "ws_rtt_h2",
    "ws_throughput",
    "large_body",
    "idle",
    "idle_h2",
    "isolation",
];

/// WebSockets over HTTP/2 (RFC 8441): nginx, Caddy 2.6 and the direct
/// upstream do not accept them, so these run for nbgate's builds only.
const H2_WEBSOCKET_MEASURES: [&str; 2] = ["ws_rtt_h2", "idle_h2"];

/// How the WebSockets of `measure` reach the contender.
fn websocket_via(measure: &str) -> load::Via {
    if H2_WEBSOCKET_MEASURES.contains(&measure) {
        load::Via::Http2
    } else {
        load::Via::Http1
    }
}

struct Opts {
    quick: bool,
    venv: Option<PathBuf>,
    out: PathBuf,
    only: Vec<String>,
    contenders: Vec<Kind>,
    rounds: usize,
    /// Rounds of the HTTP/1.1 and HTTP/2 throughput measures: their medians
    /// drift most on a shared machine, and each round is short.
    throughput_rounds: usize,
    secs: u64,
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let code = match args.first().map(String::as_str) {
        Some("upstream") => {
            let port = arg_value(&args, "--port")
                .and_then(|p| p.parse().ok())
                .unwrap_or(8080);
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(upstream::serve(port)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("upstream: {e}");
                    1
                }
            }
        }
        Some("run") => {
            let opts = parse_opts(&args);
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            // On SIGTERM/SIGINT the run future is dropped, which stops
            // every process it started (their handles kill on drop).
            let interrupted = async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            };
            let result = rt.block_on(async {
                tokio::select! {
                    r = run(opts) => r,
                    () = interrupted => Err::<(), BoxError>("interrupted".into()),
                }
            });
            match result {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("loadgen: {e}");
                    1
                }
            }
        }
        _ => {
            eprintln!(
                "loadgen: no command given; run `bash benches/run.sh` (see benches/README.md)"
            );
            0
        }
    };
    std::process::exit(code);
}

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn parse_opts(args: &[String]) -> Opts {
    let quick = args.iter().any(|a| a == "--quick");
    let list = |name: &str| -> Vec<String> {
        arg_value(args, name)
            .map(|v| v.split(',').map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let contenders = {
        let l = list("--contenders");
        if l.is_empty() && std::env::var_os("NBGATE_BEFORE_BIN").is_some() {
            Kind::WITH_BEFORE.to_vec()
        } else if l.is_empty() {
            Kind::ALL.to_vec()
        } else {
            l.iter().filter_map(|s| Kind::parse(s)).collect()
        }
    };
    Opts {
        quick,
        venv: arg_value(args, "--venv")
            .or_else(|| std::env::var("NBGATE_TEST_VENV").ok())
            .map(PathBuf::from),
        out: arg_value(args, "--out")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("benches")),
        only: list("--only"),
        contenders,
        rounds: arg_value(args, "--rounds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 1 } else { 3 }),
        throughput_rounds: arg_value(args, "--rounds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 1 } else { 5 }),
        secs: arg_value(args, "--secs")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 2 } else { 5 }),
    }
}

/// One figure of one run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    pub measure: String,
    pub contender: String,
    pub round: usize,
    pub metric: String,
    pub value: f64,
}

/// What the run produced, and how.
pub struct Outcome {
    pub rows: Vec<Row>,
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    pub commands: Vec<String>,
}

impl Outcome {
    fn add(&mut self, measure: &str, kind: Kind, round: usize, figs: load::Figures) {
        for (metric, value) in figs {
            println!(
                "  {measure:<14} {:<7} r{round} {metric:<22} {value:>12.2}",
                kind.name()
            );
            self.rows.push(Row {
                measure: measure.to_owned(),
                contender: kind.name().to_owned(),
                round,
                metric: metric.to_owned(),
                value,
            });
        }
    }
}

fn nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    r.rlim_cur
}

async fn run(opts: Opts) -> Result<(), BoxError> {
    let tmp = tempfile::Builder::new().prefix("nbgate-bench-").tempdir()?;
    let dir = tmp.path().to_path_buf();
    println!("loadgen: working in {}", dir.display());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());

    // One ECDSA P-256 certificate for every contender.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem())?;
    std::fs::write(&key_path, cert.key_pair.serialize_pem())?;

    let password = "bench-password-1".to_owned();
    let password_hash = nbgate::auth::password::hash_password(&password)?;
    let nbgate_bin = std::env::var("NBGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("target/release/nbgate"));
    if !nbgate_bin.exists() {
        return Err(format!(
            "{} missing: cargo build --release first",
            nbgate_bin.display()
        )
        .into());
    }
    let policy_toml = std::env::var("NBGATE_BENCH_POLICY").unwrap_or_default();
    let env = Env {
        dir: dir.clone(),
        cert: cert_path,
        key: key_path,
        nbgate_bin: nbgate_bin.clone(),
        nbgate_before_bin: std::env::var_os("NBGATE_BEFORE_BIN").map(PathBuf::from),
        workers,
        user: "bench".into(),
        password: password.clone(),
        password_hash,
        policy_toml: policy_toml.clone(),
    };

    let up_port = procs::free_port();
    let exe = std::env::current_exe()?;
    let up = Arc::new(Proc::spawn(
        "upstream",
        Command::new(&exe)
            .arg("upstream")
            .arg("--port")
            .arg(up_port.to_string())
            .env("TOKIO_WORKER_THREADS", workers.to_string()),
        &dir.join("upstream.log"),
    )?);
    net::wait_listening(([127, 0, 0, 1], up_port).into(), Duration::from_secs(10)).await?;
    let backend = Backend {
        port: up_port,
        jupyter_token: None,
    };
    let tls = net::tls_setup();

    let mut out = Outcome {
        rows: Vec::new(),
        failures: Vec::new(),
        notes: Vec::new(),
        commands: Vec::new(),
    };
    if policy_toml.trim().is_empty() {
        out.notes.push("nbgate ran without a `[policy]` section: policy (allowlist + rate limits) had not landed on main at the time of this run.".into());
    } else {
        out.notes.push(format!(
            "nbgate ran with this `[policy]` section:\n\n```toml\n{}\n```",
            policy_toml.trim()
        ));
    }
    let dur = Duration::from_secs(opts.secs);
    let size: u64 = if opts.quick { 256 << 20 } else { 1 << 30 };
    let limit = nofile_limit();
    let tunnels =
        (if opts.quick { 1000 } else { 10_000 }).min(((limit.saturating_sub(200)) / 2) as usize);
    if tunnels < 10_000 && !opts.quick {
        out.notes.push(format!(
            "Idle scale: {tunnels} tunnels instead of 10,000: the open-files limit here is {limit} and a proxy holds 2 descriptors per tunnel."
        ));
    }
    out.commands.push(format!(
        "wrk -t2 -c50 -d{}s -s report.lua -H 'Cookie: __Host-nbgate-session=…' https://localhost:PORT/1k",
        opts.secs
    ));

    let selected = |m: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == m);
    for measure in MEASURES {
        if !selected(measure) {
            continue;
        }
        let kinds: Vec<Kind> = if measure == "isolation" {
            opts.contenders
                .iter()
                .copied()
                .filter(|k| matches!(k, Kind::Nbgate | Kind::NbgateBefore))
                .collect()
        } else if H2_WEBSOCKET_MEASURES.contains(&measure) {
            opts.contenders
                .iter()
                .copied()
                .filter(|k| k.is_nbgate())
                .collect()
        } else {
            // The pre-fix build only where the fixes touch the path
            // (request forwarding, tunnels, logins, handshakes), to keep a
            // full run short.
            let before_here = matches!(
                measure,
                "h1" | "h2"
                    | "tls_full"
                    | "tls_resumed"
                    | "tls_resumed_x25519"
                    | "ws_rtt"
                    | "ws_throughput"
                    | "idle"
            );
            opts.contenders
                .iter()
                .copied()
                .filter(|k| !k.is_variant() || before_here)
                .collect()
        };
        let rounds = match measure {
            "idle" | "idle_h2" | "large_body" => opts.rounds.min(if opts.quick { 1 } else { 2 }),
            "h1" | "h2" => opts.throughput_rounds,
            _ => opts.rounds,
        };
        println!("== {measure}");
        // An older build without WebSockets over HTTP/2 (`nbgate-before`
        // may be one) is noted once and left out, not failed every round.
        let mut without_h2_websockets: Vec<Kind> = Vec::new();
        for round in 0..rounds {
            for &kind in &kinds {
                if without_h2_websockets.contains(&kind) {
                    continue;
                }
                if measure == "isolation" {
                    // Alternate: without the flood, then with it.
                    for (label, flood) in [("isolation_quiet", 0), ("isolation_flood", 16)] {
                        let r = one(
                            &env,
                            &backend,
                            &tls,
                            kind,
                            label,
                            round,
                            |t, _c| async move { load::isolation(&t, flood, dur * 2).await },
                        )
                        .await;
                        record(&mut out, label, kind, round, r);
                    }
                    continue;
                }
                if measure == "large_body" {
                    let down = one(
                        &env,
                        &backend,
                        &tls,
                        kind,
                        "download",
                        round,
                        |t, c| async move { load::download(&t, size, c.proc.as_ref()).await },
                    )
                    .await;
                    record(&mut out, "download", kind, round, down);
                    let upl = one(
                        &env,
                        &backend,
                        &tls,
                        kind,
                        "upload",
                        round,
                        |t, c| async move { load::upload(&t, size, c.proc.as_ref()).await },
                    )
                    .await;
                    record(&mut out, "upload", kind, round, upl);
                    continue;
                }
                let r = match measure {
                    "h1" => {
                        let d = dir.clone();
                        one(
                            &env,
                            &backend,
                            &tls,
                            kind,
                            measure,
                            round,
                            |t, _c| async move {
                                // Warm-up (connections, pools, caches), then the run.
                                let (t2, d2) = (t.clone(), d.clone());
                                tokio::task::spawn_blocking(move || {
                                    load::wrk(&t2, &d2, 50, Duration::from_secs(1))
                                })
                                .await??;
                                tokio::task::spawn_blocking(move || load::wrk(&t, &d, 50, dur))
                                    .await?
                            },
                        )
                        .await
                    }
                    "h2" => {
                        one(
                            &env,
                            &backend,
                            &tls,
                            kind,
                            measure,
                            round,
                            |t, _c| async move {
                                load::h2(&t, 4, 16, Duration::from_secs(1)).await?;
                                load::h2(&t, 4, 16, dur).await
                            },
                        )
                        .await
                    }
                    "tls_full" | "tls_resumed" | "tls_resumed_x25519" => {
                        let alpn = match measure {
                            "tls_full" => net::Alpn::H1NoResume,
                            "tls_resumed" => net::Alpn::H1,
                            _ => net::Alpn::H1X25519,
                        };
                        one(
                            &env,
                            &backend,
                            &tls,
                            kind,
                            measure,
                            round,
                            |t, _c| async move { load::handshakes(&t, alpn, 16, dur).await },
                        )
                        .await
                    }
                    "ws_rtt" | "ws_rtt_h2" => {
                        let via = websocket_via(measure);
                        one(
                            &env,
                            &backend,
                            &tls,
                            kind,
                            measure,
                            round,
                            |t, _c| async move {
                                load::ws_rtt(&t, via, Duration::from_millis(500)).await?;
                                load::ws_rtt(&t, via, dur).await
                            },
                        )
                        .await
                    }
                    "ws_throughput" => {
                        one(
                            &env,
                            &backend,
                            &tls,
                            kind,
                            measure,
                            round,
                            |t, _c| async move { load::ws_throughput(&t, dur).await },
                        )
                        .await
                    }
                    "idle" | "idle_h2" => {
                        let via = websocket_via(measure);
                        let up = Arc::clone(&up);
                        one(
                            &env,
                            &backend,
                            &tls,
                            kind,
                            measure,
                            round,
                            |t, c| async move {
                                // Direct: the upstream holds the connections.
                                let holder: &Proc = c.proc.as_ref().unwrap_or(&up);
                                load::idle(&t, via, tunnels, holder).await
                            },
                        )
                        .await
                    }
                    _ => unreachable!("measure list is fixed"),
                };
                if kind.is_variant()
                    && matches!(&r, Err(e) if e.to_string().contains(load::NO_RFC8441))
                {
                    out.notes.push(format!(
                        "{measure}: {} does not offer WebSockets over HTTP/2; left out.",
                        kind.name()
                    ));
                    without_h2_websockets.push(kind);
                    continue;
                }
                record(&mut out, measure, kind, round, r);
            }
        }
    }

    // The second set: a real Jupyter Server behind every contender.
    if selected("kernel") {
        match opts.venv.as_ref().map(|v| v.join("bin/jupyter-server")) {
            Some(bin) if bin.exists() => {
                if let Err(e) = jupyter_set(&env, &tls, &bin, &opts, dur, &mut out).await {
                    out.failures.push(format!("kernel: {e}"));
                }
            }
            _ => out.notes.push(
                "Kernel round trip skipped: no Jupyter venv (`--venv DIR` or NBGATE_TEST_VENV)."
                    .into(),
            ),
        }
    }
    drop(up);

    report::write(&opts, &env, &out)?;
    Ok(())
}

fn record(
    out: &mut Outcome,
    measure: &str,
    kind: Kind,
    round: usize,
    r: Result<load::Figures, BoxError>,
) {
    match r {
        Ok(f) => out.add(measure, kind, round, f),
        Err(e) => {
            let msg = format!("{measure} {} round {round}: {e}", kind.name());
            eprintln!("  FAILED {msg}");
            out.failures.push(msg);
        }
    }
}

/// Starts `kind` in front of `backend`, logs in when it is nbgate, runs
/// `job`; the contender stops when the job's last handle to it drops.
async fn one<F, Fut>(
    env: &Env,
    backend: &Backend,
    tls: &Arc<net::TlsSetup>,
    kind: Kind,
    measure: &str,
    round: usize,
    job: F,
) -> Result<load::Figures, BoxError>
where
    F: FnOnce(Target, Arc<Contender>) -> Fut,
    Fut: std::future::Future<Output = Result<load::Figures, BoxError>>,
{
    let c = Arc::new(Contender::start(kind, env, backend, &format!("{measure}-{round}")).await?);
    let target = target_for(&c, env, backend, tls).await?;
    // Held here too: a job that does not use its handle drops it at once.
    let keep = Arc::clone(&c);
    let cpu_before = keep.proc.as_ref().map(|p| p.cpu_secs());
    let started = Instant::now();
    let mut r = job(target, c).await;
    let elapsed = started.elapsed().as_secs_f64();
    // CPU per request: the proxy's own cost, steadier than req/s when the
    // load generator and the servers share two cores.
    if let (Ok(figs), Some(before), Some(p)) = (&mut r, cpu_before, keep.proc.as_ref()) {
        let rps = figs.iter().find(|(k, _)| *k == "rps").map(|(_, v)| *v);
        if let Some(rps) = rps.filter(|r| *r > 0.0) {
            let cpu = p.cpu_secs() - before;
            figs.push(("cpu_us_per_req", cpu * 1e6 / (rps * elapsed)));
        }
    }
    drop(keep);
    r
}

async fn target_for(
    c: &Contender,
    env: &Env,
    backend: &Backend,
    tls: &Arc<net::TlsSetup>,
) -> Result<Target, BoxError> {
    let (tls, authority) = match c.kind {
        Kind::Direct => (None, format!("127.0.0.1:{}", c.addr.port())),
        _ => (
            Some(Arc::clone(tls)),
            format!("localhost:{}", c.addr.port()),
        ),
    };
    let mut target = Target {
        addr: c.addr,
        tls,
        authority,
        auth: HeaderMap::new(),
    };
    let mut auth = HeaderMap::new();
    if c.kind.is_nbgate() {
        // The real cost of a cookie check is part of every nbgate figure.
        auth.insert(
            "cookie",
            net::login(&target, &env.user, &env.password).await?,
        );
    } else if let Some(t) = &backend.jupyter_token {
        auth.insert(
            "authorization",
            HeaderValue::from_str(&format!("token {t}"))?,
        );
    }
    target.auth = auth;
    Ok(target)
}

async fn jupyter_set(
    env: &Env,
    tls: &Arc<net::TlsSetup>,
    bin: &std::path::Path,
    opts: &Opts,
    dur: Duration,
    out: &mut Outcome,
) -> Result<(), BoxError> {
    let port = procs::free_port();
    let token = format!("bench{:016x}", rand::random::<u64>());
    let jd = env.dir.join("jupyter");
    for sub in ["root", "runtime", "data", "config", "ipython"] {
        std::fs::create_dir_all(jd.join(sub))?;
    }
    let mut cmd = Command::new(bin);
    cmd.arg("--ServerApp.ip=127.0.0.1")
        .arg(format!("--ServerApp.port={port}"))
        .arg("--ServerApp.port_retries=0")
        .arg(format!("--IdentityProvider.token={token}"))
        // What an admin behind nginx or Caddy sets so that proxied
        // WebSockets and remote hosts are accepted.
        .arg("--ServerApp.allow_origin=*")
        .arg("--ServerApp.allow_remote_access=True")
        .arg(format!(
            "--ServerApp.root_dir={}",
            jd.join("root").display()
        ))
        .arg("--ServerApp.allow_root=True")
        .arg("--no-browser")
        .current_dir(jd.join("root"))
        .env("JUPYTER_RUNTIME_DIR", jd.join("runtime"))
        .env("JUPYTER_DATA_DIR", jd.join("data"))
        .env("JUPYTER_CONFIG_DIR", jd.join("config"))
        .env("IPYTHONDIR", jd.join("ipython"))
        .env("JUPYTER_PLATFORM_DIRS", "1");
    let _jupyter = Proc::spawn("jupyter", &mut cmd, &jd.join("jupyter.log"))?;
    net::wait_listening(([127, 0, 0, 1], port).into(), Duration::from_secs(60)).await?;
    let backend = Backend {
        port,
        jupyter_token: Some(token.clone()),
    };
    let direct = Target {
        addr: ([127, 0, 0, 1], port).into(),
        tls: None,
        authority: format!("127.0.0.1:{port}"),
        auth: {
            let mut h = HeaderMap::new();
            h.insert(
                "authorization",
                HeaderValue::from_str(&format!("token {token}"))?,
            );
            h
        },
    };
    // One kernel, shared by every contender in turn.
    let mut kernel = None;
    for _ in 0..100 {
        match load::start_kernel(&direct).await {
            Ok(k) => {
                kernel = Some(k);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let kernel = kernel.ok_or("could not start a kernel")?;
    // First execute warms the kernel up (about a second).
    load::kernel_rtt(&direct, &kernel, Duration::from_secs(2)).await?;
    println!("== kernel");
    for round in 0..opts.rounds {
        for &kind in opts.contenders.iter().filter(|k| !k.is_variant()) {
            let k = kernel.clone();
            let r = one(
                env,
                &backend,
                tls,
                kind,
                "kernel",
                round,
                |t, _c| async move { load::kernel_rtt(&t, &k, dur).await },
            )
            .await;
            record(out, "kernel", kind, round, r);
        }
    }
    Ok(())
}

/// Median of each (measure, contender, metric) over the rounds.
pub fn medians(rows: &[Row]) -> BTreeMap<(String, String, String), f64> {
    let mut groups: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    for r in rows {
        groups
            .entry((r.measure.clone(), r.contender.clone(), r.metric.clone()))
            .or_default()
            .push(r.value);
    }
    groups
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            let m = if v.len() % 2 == 1 {
                v[v.len() / 2]
            } else {
                (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
            };
            (k, m)
        })
        .collect()
}
