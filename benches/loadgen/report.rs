//! Writes `REPORT.md`, `results.json` and the PNG charts (gnuplot) from
//! one run's figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use crate::net::BoxError;
use crate::procs::Env;
use crate::{medians, Opts, Outcome, Row};

/// (metric, label, higher is better, show ratios)
type Metric = (&'static str, &'static str, bool, bool);

struct Spec {
    id: &'static str,
    title: &'static str,
    what: &'static str,
    metrics: &'static [Metric],
}

const SPECS: &[Spec] = &[
    Spec {
        id: "h1",
        title: "1. HTTP/1.1 keep-alive, 1 KiB response",
        what: "wrk, 2 threads, 50 connections; latency from wrk's histogram.",
        metrics: &[
            ("rps", "req/s", true, true),
            ("p50_ms", "p50 ms", false, false),
            ("p99_ms", "p99 ms", false, true),
            ("p999_ms", "p99.9 ms", false, false),
            ("cpu_us_per_req", "CPU µs/req", false, true),
        ],
    },
    Spec {
        id: "h2",
        title: "2. HTTP/2, 1 KiB response, multiplexed",
        what: "own client: 4 connections × 16 concurrent streams (direct: h2c prior knowledge).",
        metrics: &[
            ("rps", "req/s", true, true),
            ("p50_ms", "p50 ms", false, false),
            ("p99_ms", "p99 ms", false, true),
            ("p999_ms", "p99.9 ms", false, false),
            ("cpu_us_per_req", "CPU µs/req", false, true),
        ],
    },
    Spec {
        id: "tls_full",
        title: "3a. New connections per second, full TLS 1.3 handshake",
        what: "16 workers; each connection: TCP connect, TLS 1.3 handshake (no resumption), one `GET /1k` with `Connection: close`. Direct: plain TCP.",
        metrics: &[("conns_per_s", "conn/s", true, true)],
    },
    Spec {
        id: "tls_resumed",
        title: "3b. New connections per second, TLS 1.3 session resumption",
        what: "as 3a with the client's session cache on (tickets).",
        metrics: &[
            ("conns_per_s", "conn/s", true, true),
            ("resumed_pct", "% resumed", true, false),
        ],
    },
    Spec {
        id: "tls_resumed_x25519",
        title: "3c. New connections per second, TLS 1.3 session resumption, X25519 only",
        what: "as 3b from a client that offers X25519 alone (a client without ML-KEM): every contender does the same key exchange, so this isolates the handshake code from the cost of the hybrid group.",
        metrics: &[
            ("conns_per_s", "conn/s", true, true),
            ("resumed_pct", "% resumed", true, false),
        ],
    },
    Spec {
        id: "ws_rtt",
        title: "4a. WebSocket echo round trip, 100-byte messages",
        what: "one connection, one message in flight.",
        metrics: &[
            ("p50_us", "p50 µs", false, true),
            ("p99_us", "p99 µs", false, true),
            ("round_trips_per_s", "round trips/s", true, false),
        ],
    },
    Spec {
        id: "ws_throughput",
        title: "4b. WebSocket echo throughput, 64 KiB messages",
        what: "one connection, 8 messages in flight; MB/s echoed back.",
        metrics: &[("mb_per_s", "MB/s", true, true)],
    },
    Spec {
        id: "kernel",
        title: "4c. Jupyter kernel `execute_request` → `execute_reply` round trip",
        what: "a real Jupyter Server + ipykernel behind each contender; code `1+1`, one request in flight.",
        metrics: &[("p50_ms", "p50 ms", false, true), ("p99_ms", "p99 ms", false, true)],
    },
    Spec {
        id: "ws_rtt_h2",
        title: "4d. WebSocket echo round trip over HTTP/2 (RFC 8441), 100-byte messages",
        what: "as 4a, the WebSocket one stream of an HTTP/2 connection (extended CONNECT), which nbgate bridges to the upstream's HTTP/1.1 upgrade. nbgate's builds only: nginx, Caddy 2.6 and the direct upstream do not accept WebSockets over HTTP/2. Against 4a: \"WebSockets over HTTP/2 and HTTP/1.1, same run\" below.",
        metrics: &[
            ("p50_us", "p50 µs", false, false),
            ("p99_us", "p99 µs", false, false),
            ("round_trips_per_s", "round trips/s", true, false),
        ],
    },
    Spec {
        id: "download",
        title: "5a. Large download over HTTP/1.1",
        what: "one `GET` of the body size below; peak RSS of the proxy (all processes).",
        metrics: &[
            ("mb_per_s", "MB/s", true, true),
            ("peak_rss_mib", "peak RSS MiB", false, false),
        ],
    },
    Spec {
        id: "upload",
        title: "5b. Large upload over HTTP/1.1",
        what: "one streamed `POST` of the body size below.",
        metrics: &[
            ("mb_per_s", "MB/s", true, true),
            ("peak_rss_mib", "peak RSS MiB", false, false),
        ],
    },
    Spec {
        id: "idle",
        title: "6. Idle TLS WebSocket tunnels",
        what: "RSS growth of the process(es) holding the tunnels (direct: the upstream itself, plain WebSocket) divided by the number of tunnels.",
        metrics: &[
            ("kib_per_tunnel", "KiB/tunnel", false, true),
            ("tunnels", "tunnels", true, false),
            ("rss_mib", "RSS MiB", false, false),
            ("opened_per_s", "opened/s", true, false),
        ],
    },
    Spec {
        id: "idle_h2",
        title: "6b. Idle WebSocket tunnels over HTTP/2",
        what: "as 6, each tunnel a stream of an HTTP/2 connection carrying 100 of them; the connections are opened before the count starts, as a browser's page connection exists before its WebSockets, so the figure is what one more WebSocket costs nbgate. nbgate's builds only.",
        metrics: &[
            ("kib_per_tunnel", "KiB/tunnel", false, false),
            ("tunnels", "tunnels", true, false),
            ("rss_mib", "RSS MiB", false, false),
            ("opened_per_s", "opened/s", true, false),
        ],
    },
];

/// (label, HTTP/1.1 measure, HTTP/2 measure, metric): WebSockets both ways.
const H2_WEBSOCKET_PAIRS: [(&str, &str, &str, &str); 3] = [
    ("RTT p50 µs", "ws_rtt", "ws_rtt_h2", "p50_us"),
    ("RTT p99 µs", "ws_rtt", "ws_rtt_h2", "p99_us"),
    ("KiB per idle tunnel", "idle", "idle_h2", "kib_per_tunnel"),
];

fn fmt(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn capture(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let s = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            s.lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_else(|_| "not found".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or("unknown".into(), |k| {
            format!("{:.1} GiB", k as f64 / 1048576.0)
        })
}

/// Criterion's output: `(name, middle estimate in ns)`.
fn parse_criterion(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut prev = String::new();
    for line in text.lines() {
        if let Some(at) = line.find("time:") {
            let name = line[..at].trim();
            let name = if name.is_empty() { prev.trim() } else { name };
            let inner = line[at..].split(['[', ']']).nth(1).unwrap_or("");
            let parts: Vec<&str> = inner.split_whitespace().collect();
            if parts.len() >= 4 {
                if let Ok(v) = parts[2].parse::<f64>() {
                    let scale = match parts[3] {
                        "ps" => 0.001,
                        "ns" => 1.0,
                        "µs" | "us" => 1000.0,
                        "ms" => 1e6,
                        "s" => 1e9,
                        _ => 1.0,
                    };
                    out.push((name.to_owned(), v * scale));
                }
            }
        } else if !line.trim().is_empty() {
            prev = line.to_owned();
        }
    }
    out
}

fn ns(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} µs", v / 1000.0)
    } else {
        format!("{v:.1} ns")
    }
}

pub fn write(opts: &Opts, env: &Env, out: &Outcome) -> Result<(), BoxError> {
    let dir = &opts.out;
    std::fs::create_dir_all(dir)?;
    let med = medians(&out.rows);
    let get = |m: &str, c: &str, k: &str| {
        med.get(&(m.to_owned(), c.to_owned(), k.to_owned()))
            .copied()
    };
    let kinds: Vec<&str> = opts.contenders.iter().map(|k| k.name()).collect();

    let mut r = String::new();
    let date = capture("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    writeln!(r, "# nbgate benchmark report\n")?;
    writeln!(
        r,
        "Written by `benches/run.sh` (`benches/loadgen`) on {date}. {} mode: {} round(s) per measure ({} for HTTP/1.1 and HTTP/2 throughput), {} s per run; figures are medians over rounds, and contenders were run alternately (direct, nbgate, nginx, Caddy, direct, …) so drift on the shared machine hits all alike. Compare ratios, not absolute numbers: the load generator shares the CPU with the servers.\n",
        if opts.quick { "Quick" } else { "Full" },
        opts.rounds,
        opts.throughput_rounds,
        opts.secs
    )?;
    writeln!(r, "## Machine and versions\n")?;
    let jupyter = opts
        .venv
        .as_ref()
        .map(|v| {
            capture(
                &v.join("bin/jupyter-server").display().to_string(),
                &["--version"],
            )
        })
        .unwrap_or_else(|| "not used".into());
    for (k, v) in [
        ("CPU", format!("{} × {}", env.workers, cpu_model())),
        ("Memory", mem_total()),
        ("Kernel", capture("uname", &["-srm"])),
        (
            "nbgate",
            capture("git", &["describe", "--always", "--dirty"]),
        ),
        ("rustc", capture("rustc", &["-V"])),
        ("nginx", capture("nginx", &["-v"])),
        ("Caddy", capture("caddy", &["version"])),
        ("wrk", capture("wrk", &["-v"])),
        ("Jupyter Server", jupyter),
    ] {
        writeln!(r, "- {k}: {v}")?;
    }
    writeln!(
        r,
        "\nSetup: one ECDSA P-256 certificate (rcgen) for every contender; TLS 1.2 + 1.3 offered by every server, clients negotiate TLS 1.3; {} worker threads for nbgate (tokio), nginx (`worker_processes`) and Caddy (`GOMAXPROCS`). nbgate runs with login on: every request carries a valid `__Host-nbgate-session` cookie (fresh login per run). The upstream is `loadgen upstream` (hyper, 1 KiB body, WebSocket echo). nginx: `keepalive 64` upstream, `proxy_http_version 1.1`, `Connection \"\"` (WebSocket `map`), access log off, `ssl_session_cache`; Caddy: `reverse_proxy` defaults, h1+h2. Full configs: `benches/README.md`.\n",
        env.workers
    )?;
    writeln!(
        r,
        "Command: `bash benches/run.sh{}`.\n",
        if opts.quick { " --quick" } else { "" }
    )?;
    for c in &out.commands {
        writeln!(r, "- `{c}`")?;
    }
    for n in &out.notes {
        writeln!(r, "\n> {}", n.replace('\n', "\n> "))?;
    }

    writeln!(r, "\n## Headline\n")?;
    writeln!(r, "{}", headline(&get, &kinds))?;
    writeln!(
        r,
        "Charts: ![throughput](throughput.png) ![latency](latency.png)\n"
    )?;

    writeln!(r, "## Targets\n")?;
    writeln!(r, "{}", targets(&get, dir))?;

    writeln!(r, "## Measures\n")?;
    for s in SPECS {
        let any = kinds
            .iter()
            .any(|c| s.metrics.iter().any(|m| get(s.id, c, m.0).is_some()));
        if !any {
            continue;
        }
        writeln!(r, "### {}\n\n{}", s.title, s.what)?;
        if matches!(s.id, "download" | "upload") {
            let size = if opts.quick { "256 MiB" } else { "1 GiB" };
            writeln!(r, "Body size: {size}.")?;
        }
        writeln!(r)?;
        let mut head = String::from("| contender |");
        let mut sep = String::from("|---|");
        for m in s.metrics {
            let arrow = if m.2 { "↑" } else { "↓" };
            write!(head, " {} {arrow} |", m.1)?;
            sep.push_str("---:|");
            if m.3 {
                write!(head, " ×nginx | ×direct |")?;
                sep.push_str("---:|---:|");
            }
        }
        writeln!(r, "{head}\n{sep}")?;
        for c in &kinds {
            let mut row = format!("| {c} |");
            for m in s.metrics {
                let v = get(s.id, c, m.0);
                write!(row, " {} |", v.map_or("–".into(), fmt))?;
                if m.3 {
                    for base in ["nginx", "direct"] {
                        let ratio = match (v, get(s.id, base, m.0)) {
                            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                            _ => "–".into(),
                        };
                        write!(row, " {ratio} |")?;
                    }
                }
            }
            writeln!(r, "{row}")?;
        }
        writeln!(r)?;
    }

    if kinds.iter().any(|c| {
        H2_WEBSOCKET_PAIRS
            .iter()
            .any(|p| get(p.2, c, p.3).is_some())
    }) {
        writeln!(r, "### WebSockets over HTTP/2 and HTTP/1.1, same run\n")?;
        writeln!(
            r,
            "4a against 4d and 6 against 6b: the same upstream WebSocket, reached by an upgraded HTTP/1.1 connection (a TLS connection per WebSocket) or by a stream of an HTTP/2 connection.\n"
        )?;
        writeln!(
            r,
            "| contender | metric | HTTP/1.1 | HTTP/2 | HTTP/2 ÷ HTTP/1.1 |\n|---|---|---:|---:|---:|"
        )?;
        for c in &kinds {
            for (label, h1, h2, k) in H2_WEBSOCKET_PAIRS {
                if let (Some(a), Some(b)) = (get(h1, c, k), get(h2, c, k)) {
                    let q = if a > 0.0 {
                        format!("{:.2}", b / a)
                    } else {
                        "–".into()
                    };
                    writeln!(r, "| {c} | {label} | {} | {} | {q} |", fmt(a), fmt(b))?;
                }
            }
        }
        writeln!(r)?;
    }

    writeln!(
        r,
        "### 7. Isolation: a logged-in user during a wrong-password login flood (nbgate)\n"
    )?;
    writeln!(r, "10 keep-alive connections, each sending `GET /1k` with the session cookie every 20 ms (500 req/s), alone and while 16 connections send wrong-password logins back to back (PBKDF2-SHA256, 600,000 iterations each; at most `max_concurrent_verifications` run at once, the rest get 429, answered after `policy.lockout.refusal_delay` since fix 4 of `benches/README.md`).\n")?;
    writeln!(r, "| build | run | p50 ms | p99 ms | p99.9 ms | login attempts/s | % refused 429 |\n|---|---|---:|---:|---:|---:|---:|")?;
    for c in ["nbgate-before", "nbgate"] {
        for (label, id) in [
            ("alone", "isolation_quiet"),
            ("during flood", "isolation_flood"),
        ] {
            if get(id, c, "p99_ms").is_none() {
                continue;
            }
            let g = |k| get(id, c, k).map_or("–".into(), fmt);
            writeln!(
                r,
                "| {c} | {label} | {} | {} | {} | {} | {} |",
                g("p50_ms"),
                g("p99_ms"),
                g("p999_ms"),
                g("flood_attempts_per_s"),
                g("flood_refused_busy_pct")
            )?;
        }
    }
    writeln!(r)?;
    for c in ["nbgate-before", "nbgate"] {
        if let (Some(a), Some(b)) = (
            get("isolation_quiet", c, "p99_ms"),
            get("isolation_flood", c, "p99_ms"),
        ) {
            writeln!(
                r,
                "- {c}: p99 during flood / p99 alone = **{:.2}×** (target ≤ 2×).",
                b / a
            )?;
        }
    }
    writeln!(r)?;

    writeln!(r, "### 8. Micro benches (criterion)\n")?;
    let mut micro_any = false;
    for (file, what) in [
        ("micro.txt", "`cargo bench --bench micro`"),
        ("policy.txt", "`cargo bench --bench policy`"),
    ] {
        if let Ok(text) = std::fs::read_to_string(dir.join("raw").join(file)) {
            let items = parse_criterion(&text);
            if items.is_empty() {
                continue;
            }
            micro_any = true;
            writeln!(r, "{what}:\n\n| bench | time |\n|---|---:|")?;
            for (n, v) in items {
                writeln!(r, "| {n} | {} |", ns(v))?;
            }
            writeln!(r)?;
        }
    }
    if !micro_any {
        writeln!(r, "Not run in this report.\n")?;
    }

    if kinds.contains(&"nbgate-metrics") {
        writeln!(r, "## Metrics on / off, same run\n")?;
        writeln!(
            r,
            "`nbgate-metrics` is the same binary as `nbgate` with `[admin] listen` set, which turns on the per-request metrics (issue 19: at most 2% of requests/s), run alternately with the others in this same run.\n"
        )?;
        same_run_table(&mut r, &get, "nbgate", "nbgate-metrics", "on ÷ off")?;
        writeln!(r)?;
    }
    if kinds.contains(&"nbgate-audit") {
        writeln!(r, "## Audit on / off, same run\n")?;
        writeln!(
            r,
            "`nbgate-audit` is the same binary as `nbgate` with `[audit] file`, `code` and `terminal_input` on: every frame a client sends on a kernel channel (the WebSocket measures use a kernel channel's path) is read by the code audit (issue 21: the round trip within 10% of audit off), run alternately with the others in this same run.\n"
        )?;
        same_run_table(&mut r, &get, "nbgate", "nbgate-audit", "on ÷ off")?;
        writeln!(r)?;
    }
    if kinds.contains(&"nbgate-before") {
        writeln!(r, "## Before / after the fixes, same run\n")?;
        let which = std::env::var("NBGATE_BEFORE_DESC").unwrap_or_else(|_| {
            "the build before the profiling fixes (see `benches/README.md`)".into()
        });
        writeln!(
            r,
            "`nbgate-before` is {which}, run alternately with the others in this same run.\n"
        )?;
        same_run_table(&mut r, &get, "nbgate-before", "nbgate", "after ÷ before")?;
        for id in ["isolation_quiet", "isolation_flood"] {
            for (k, label) in [("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")] {
                if let (Some(b), Some(a)) = (get(id, "nbgate-before", k), get(id, "nbgate", k)) {
                    writeln!(
                        r,
                        "| {id} | {label} | {} | {} | {:.2} | – |",
                        fmt(b),
                        fmt(a),
                        a / b.max(1e-9)
                    )?;
                }
            }
        }
        writeln!(r)?;
    }
    if let Ok(before) = std::fs::read_to_string(dir.join("results-before.json")) {
        writeln!(r, "## Before / after the fixes (nbgate, medians)\n")?;
        writeln!(r, "`results-before.json` holds the run before the fixes described in `benches/README.md`; both columns are nbgate, measured in different runs, so compare each with its own run's nginx column too.\n")?;
        writeln!(r, "{}", before_after(&before, &med)?)?;
    }

    if !out.failures.is_empty() {
        writeln!(r, "## Failures\n")?;
        for f in &out.failures {
            writeln!(r, "- {}", f.replace('\n', " "))?;
        }
        writeln!(r)?;
    }
    writeln!(r, "Raw figures (every round): `results.json`.")?;

    std::fs::write(dir.join("REPORT.md"), r)?;
    let json = serde_json::json!({ "rows": out.rows, "failures": out.failures });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    charts(dir, &get, &kinds);
    println!("loadgen: wrote {}", dir.join("REPORT.md").display());
    Ok(())
}

type Get<'a> = dyn Fn(&str, &str, &str) -> Option<f64> + 'a;

/// A table of two nbgate contenders measured in the same run: `a`, `b`,
/// `b ÷ a` (titled `ratio`) and nginx, for every measure both have.
fn same_run_table(
    r: &mut String,
    get: &Get<'_>,
    a: &str,
    b: &str,
    ratio: &str,
) -> std::fmt::Result {
    use std::fmt::Write;
    writeln!(
        r,
        "| measure | metric | {a} | {b} | {ratio} | nginx |\n|---|---|---:|---:|---:|---:|"
    )?;
    for sp in SPECS {
        for m in sp.metrics {
            if let (Some(x), Some(y)) = (get(sp.id, a, m.0), get(sp.id, b, m.0)) {
                let ng = get(sp.id, "nginx", m.0).map_or("–".into(), fmt);
                let q = if x > 0.0 {
                    format!("{:.3}", y / x)
                } else {
                    "–".into()
                };
                writeln!(
                    r,
                    "| {} | {} | {} | {} | {q} | {ng} |",
                    sp.id,
                    m.1,
                    fmt(x),
                    fmt(y)
                )?;
            }
        }
    }
    Ok(())
}

fn headline(get: &Get<'_>, kinds: &[&str]) -> String {
    let rows: [(&str, &str, &str, bool); 8] = [
        ("HTTP/1.1 req/s", "h1", "rps", true),
        ("HTTP/1.1 p99 ms", "h1", "p99_ms", false),
        ("HTTP/2 req/s", "h2", "rps", true),
        ("TLS 1.3 full handshakes/s", "tls_full", "conns_per_s", true),
        ("WebSocket RTT p50 µs", "ws_rtt", "p50_us", false),
        ("WebSocket 64 KiB MB/s", "ws_throughput", "mb_per_s", true),
        ("1 GiB download MB/s", "download", "mb_per_s", true),
        ("KiB per idle tunnel", "idle", "kib_per_tunnel", false),
    ];
    let mut s = String::from("| measure |");
    let mut sep = String::from("|---|");
    for k in kinds {
        write!(s, " {k} |").ok();
        sep.push_str("---:|");
    }
    s.push_str(" nbgate ÷ nginx |\n");
    sep.push_str("---:|\n");
    s.push_str(&sep);
    for (label, m, k, _) in rows {
        write!(s, "| {label} |").ok();
        for c in kinds {
            write!(s, " {} |", get(m, c, k).map_or("–".into(), fmt)).ok();
        }
        let ratio = match (get(m, "nbgate", k), get(m, "nginx", k)) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "–".into(),
        };
        writeln!(s, " {ratio} |").ok();
    }
    s
}

fn targets(get: &Get<'_>, dir: &Path) -> String {
    let mut s = String::from("| target | figure | met? |\n|---|---|---|\n");
    let mut line = |t: &str, fig: String, ok: Option<bool>| {
        let verdict = match ok {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        writeln!(s, "| {t} | {fig} | {verdict} |").ok();
    };
    let cmp = |m: &str, k: &str| (get(m, "nbgate", k), get(m, "nginx", k));
    for (m, name) in [("h1", "HTTP/1.1"), ("h2", "HTTP/2")] {
        let (a, b) = cmp(m, "rps");
        line(
            &format!("{name} throughput ≥ nginx"),
            format!(
                "{} vs {} req/s",
                a.map_or("–".into(), fmt),
                b.map_or("–".into(), fmt)
            ),
            a.zip(b).map(|(a, b)| a >= b),
        );
        let (a, b) = cmp(m, "p99_ms");
        line(
            &format!("{name} p99 ≤ nginx"),
            format!(
                "{} vs {} ms",
                a.map_or("–".into(), fmt),
                b.map_or("–".into(), fmt)
            ),
            a.zip(b).map(|(a, b)| a <= b),
        );
    }
    let (a, b) = cmp("ws_rtt", "p50_us");
    line(
        "WebSocket RTT p50 within 10% of nginx",
        format!(
            "{} vs {} µs",
            a.map_or("–".into(), fmt),
            b.map_or("–".into(), fmt)
        ),
        a.zip(b).map(|(a, b)| a <= b * 1.1),
    );
    let (a, b) = cmp("ws_rtt", "p99_us");
    line(
        "WebSocket RTT p99 within 10% of nginx",
        format!(
            "{} vs {} µs",
            a.map_or("–".into(), fmt),
            b.map_or("–".into(), fmt)
        ),
        a.zip(b).map(|(a, b)| a <= b * 1.1),
    );
    let (a, b) = cmp("ws_throughput", "mb_per_s");
    line(
        "WebSocket 64 KiB throughput ≥ nginx",
        format!(
            "{} vs {} MB/s",
            a.map_or("–".into(), fmt),
            b.map_or("–".into(), fmt)
        ),
        a.zip(b).map(|(a, b)| a >= b),
    );
    let a = get("idle", "nbgate", "kib_per_tunnel");
    line(
        "< 16 KiB RSS per idle TLS WebSocket tunnel",
        format!("{} KiB", a.map_or("–".into(), fmt)),
        a.map(|a| a < 16.0),
    );
    for m in ["download", "upload"] {
        let a = get(m, "nbgate", "peak_rss_mib");
        line(
            &format!("large {m} in < 64 MiB RSS"),
            format!("peak {} MiB", a.map_or("–".into(), fmt)),
            a.map(|a| a < 64.0),
        );
    }
    let (q, f) = (
        get("isolation_quiet", "nbgate", "p99_ms"),
        get("isolation_flood", "nbgate", "p99_ms"),
    );
    line(
        "p99 during login flood ≤ 2× p99 alone",
        format!(
            "{} vs {} ms",
            f.map_or("–".into(), fmt),
            q.map_or("–".into(), fmt)
        ),
        q.zip(f).map(|(q, f)| f <= 2.0 * q),
    );
    let micro = std::fs::read_to_string(dir.join("raw/micro.txt"))
        .map(|t| parse_criterion(&t))
        .unwrap_or_default();
    let cookie = micro
        .iter()
        .find(|(n, _)| n.starts_with("session/check_session (decrypt"))
        .map(|(_, v)| *v);
    line(
        "cookie verification < 2 µs",
        cookie.map_or("–".into(), ns),
        cookie.map(|v| v < 2000.0),
    );
    let policy = std::fs::read_to_string(dir.join("raw/policy.txt"))
        .map(|t| parse_criterion(&t))
        .unwrap_or_default();
    let allow = policy
        .iter()
        .find(|(n, _)| n.contains("10000") || n.contains("10_000") || n.contains("10k"))
        .map(|(_, v)| *v);
    line(
        "allowlist lookup < 200 ns with 10,000 entries",
        allow.map_or("– (benches/policy.rs not on main at this run)".into(), ns),
        allow.map(|v| v < 200.0),
    );
    s
}

fn before_after(
    before: &str,
    now: &BTreeMap<(String, String, String), f64>,
) -> Result<String, BoxError> {
    let v: serde_json::Value = serde_json::from_str(before)?;
    let rows: Vec<Row> = v["rows"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| {
                    Some(Row {
                        measure: r["measure"].as_str()?.to_owned(),
                        contender: r["contender"].as_str()?.to_owned(),
                        round: r["round"].as_u64()? as usize,
                        metric: r["metric"].as_str()?.to_owned(),
                        value: r["value"].as_f64()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let old = medians(&rows);
    let mut s = String::from("| measure | metric | nbgate before | nbgate after | nginx before | nginx after |\n|---|---|---:|---:|---:|---:|\n");
    for ((m, c, k), after) in now {
        if c != "nbgate" {
            continue;
        }
        let Some(b) = old.get(&(m.clone(), c.clone(), k.clone())) else {
            continue;
        };
        let nb = old
            .get(&(m.clone(), "nginx".into(), k.clone()))
            .map_or("–".into(), |v| fmt(*v));
        let na = now
            .get(&(m.clone(), "nginx".into(), k.clone()))
            .map_or("–".into(), |v| fmt(*v));
        writeln!(
            s,
            "| {m} | {k} | {} | {} | {nb} | {na} |",
            fmt(*b),
            fmt(*after)
        )?;
    }
    Ok(s)
}

/// Throughput and latency bar charts with gnuplot; skipped with a message
/// when gnuplot is not installed.
fn charts(dir: &Path, get: &Get<'_>, kinds: &[&str]) {
    let mut tp = String::from("# contender h1 h2\n");
    let mut lat = String::from("# contender h1_p50 h1_p99 h2_p50 h2_p99\n");
    for c in kinds {
        if get("h1", c, "rps").is_none() && get("h2", c, "rps").is_none() {
            continue;
        }
        let g = |m: &str, k: &str| get(m, c, k).unwrap_or(0.0);
        writeln!(tp, "{c} {} {}", g("h1", "rps"), g("h2", "rps")).ok();
        writeln!(
            lat,
            "{c} {} {} {} {}",
            g("h1", "p50_ms"),
            g("h1", "p99_ms"),
            g("h2", "p50_ms"),
            g("h2", "p99_ms")
        )
        .ok();
    }
    let raw = dir.join("raw");
    let _ = std::fs::create_dir_all(&raw);
    let _ = std::fs::write(raw.join("throughput.dat"), tp);
    let _ = std::fs::write(raw.join("latency.dat"), lat);
    let script = format!(
        r#"set terminal pngcairo size 900,480 font ",11"
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set key top right
set grid ytics
set yrange [0:*]
set datafile separator whitespace
set output "{out}/throughput.png"
set title "Requests per second, 1 KiB response (higher is better)"
set ylabel "req/s"
plot "{raw}/throughput.dat" using 2:xtic(1) title "HTTP/1.1 (wrk, 50 conns)", "" using 3 title "HTTP/2 (4 conns x 16 streams)"
set output "{out}/latency.png"
set title "Latency, 1 KiB response (lower is better)"
set ylabel "ms"
plot "{raw}/latency.dat" using 2:xtic(1) title "HTTP/1.1 p50", "" using 3 title "HTTP/1.1 p99", "" using 4 title "HTTP/2 p50", "" using 5 title "HTTP/2 p99"
"#,
        out = dir.display(),
        raw = raw.display()
    );
    let gp = raw.join("charts.gp");
    let _ = std::fs::write(&gp, script);
    match Command::new("gnuplot").arg(&gp).status() {
        Ok(s) if s.success() => {}
        _ => eprintln!(
            "loadgen: gnuplot failed or missing; charts not drawn (apt-get install gnuplot-nox)"
        ),
    }
}
