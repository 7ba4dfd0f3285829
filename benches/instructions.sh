#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: nbgate (and optionally an earlier
# build) against nginx, same load, same upstream. Unlike CPU time on a shared VM (which drifts
# ±15% between runs), the count repeats to ±0.3%, so it shows a 1–2% change in one run. It
# counts user-space instructions only (no kernel time, no cache misses): a diagnostic for A/B
# work on the request path, not a replacement for the throughput figures of benches/run.sh.
#
#   bash benches/instructions.sh              5,000 requests per contender and protocol
#   N=20000 bash benches/instructions.sh      more requests
#
# Environment: NBGATE_BIN (default: target/release/nbgate, built), NBGATE_BEFORE_BIN (optional,
# an earlier build shown as nbgate-before), NBGATE_METRICS=1 (also nbgate-metrics: the same binary
# with `[admin] listen` set, which turns the per-request metrics on), N (requests, default 5000), CALLGRIND_KEEP (a
# directory: the dumps are copied there as <contender>.<h1|h2>.<requests>.out, for
# `callgrind_annotate --inclusive=yes`; build with CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
# for function names and lines).
# Load (h2load, nghttp2): HTTP/2 4 connections × 16 streams; HTTP/1.1 16 keep-alive connections.
# Every request carries a session cookie (a valid one for nbgate, the same length for nginx).
# Each server runs one worker under valgrind; instrumentation is switched on after the login
# and a 200-request warm-up, and off before the dump, so start-up is not counted; a load of
# 1,000 requests is subtracted from one of 1,000 + N, so neither are the TLS handshakes.
# Installs (Debian, when missing): valgrind, nghttp2-client, nginx, curl, openssl (python3 picks
# free ports). Every process it
# starts is stopped on exit, also on failure or Ctrl-C.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
log() { printf '[benches/instructions.sh] %s\n' "$*" >&2; }
# shellcheck source=benches/lib.sh
source "$repo/benches/lib.sh"
install_missing valgrind nghttp2-client nginx curl openssl

N="${N:-5000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
if [[ -z "${NBGATE_BIN:-}" ]]; then
    cargo build --release --quiet --bin nbgate
    NBGATE_BIN="$CARGO_TARGET_DIR/release/nbgate"
fi
loadgen="$(cargo bench --no-run --bench loadgen 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)"
[[ -x "$loadgen" ]] || { log "could not build the loadgen bench"; exit 1; }

work="$(mktemp -d /tmp/nbgate-instructions.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up_port="$(free_port)"
"$loadgen" upstream --port "$up_port" >"$work/upstream.log" 2>&1 &
pids+=($!)
password="instructions-bench-$RANDOM$RANDOM"

wait_https() { # port
    for _ in $(seq 1 600); do
        curl -sk -o /dev/null "https://127.0.0.1:$1/" && return 0
        sleep 0.2
    done
    log "server on port $1 did not start"
    return 1
}

# Logs in to nbgate on `port`; prints the session cookie value.
login() { # port
    local jar="$work/jar.$1" page csrf
    page="$(curl -sk -c "$jar" "https://127.0.0.1:$1/_nbgate/login")"
    csrf="$(sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' <<<"$page" | head -1)"
    curl -sk -b "$jar" -c "$jar" -o /dev/null -H "origin: https://127.0.0.1:$1" -H 'accept: text/html' \
        --data-urlencode "csrf=$csrf" --data-urlencode next=/ --data-urlencode username=bench \
        --data-urlencode "password=$password" "https://127.0.0.1:$1/_nbgate/login"
    awk '$6=="__Host-nbgate-session"{print $7}' "$jar"
}

start_nbgate() { # bin port dir [admin]
    local hash admin=""
    [[ "${4:-}" == admin ]] && admin="$(printf '[admin]\nlisten = "127.0.0.1:%s"' "$(free_port)")"
    hash="$(printf '%s\n' "$password" | "$1" hash-password 2>/dev/null | tail -1)"
    cat >"$3/nbgate.toml" <<EOF
[server]
listen = ["127.0.0.1:$2"]
http_listen = []
state_dir = "$3/state"
[upstream]
url = "http://127.0.0.1:$up_port"
[log]
access_log = false
[[users]]
name = "bench"
password_hash = "$hash"
$admin
$(cat benches/policy.toml)
EOF
    RUST_LOG=warn TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$3/callgrind.out" "$1" serve --config "$3/nbgate.toml" >"$3/log.txt" 2>&1 &
}

start_nginx() { # port dir
    mkdir -p "$2"/tmp/{body,proxy,fastcgi,uwsgi,scgi}
    chmod 777 "$2"/tmp/*
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$2/key.pem" \
        -out "$2/cert.pem" -days 2 -subj /CN=localhost 2>/dev/null
    # The nginx config of benches/run.sh, with one worker and no master process.
    cat >"$2/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $2/nginx.pid;
error_log $2/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $2/tmp/body; proxy_temp_path $2/tmp/proxy;
    fastcgi_temp_path $2/tmp/fastcgi; uwsgi_temp_path $2/tmp/uwsgi; scgi_temp_path $2/tmp/scgi;
    tcp_nodelay on;
    keepalive_requests 1000000;
    map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
    upstream backend { server 127.0.0.1:$up_port; keepalive 64; }
    server {
        listen 127.0.0.1:$1 ssl http2;
        server_name localhost;
        ssl_certificate $2/cert.pem;
        ssl_certificate_key $2/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_request_buffering off;
        }
    }
}
EOF
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$2/callgrind.out" \
        nginx -p "$2" -c "$2/nginx.conf" >"$2/log.txt" 2>&1 &
}

# Instructions spent on one load of n requests: prints the total.
count() { # name proto pid dir n cookie port h2load-args...
    local name="$1" proto="$2" pid="$3" dir="$4" n="$5" cookie="$6" port="$7" f="" ir=""
    shift 7
    callgrind_control -z "$pid" >/dev/null 2>&1
    callgrind_control -i on "$pid" >/dev/null 2>&1
    h2load -n "$n" "$@" -H "cookie: __Host-nbgate-session=$cookie" \
        "https://127.0.0.1:$port/1k" >"$dir/h2load.$proto" 2>&1
    callgrind_control -i off "$pid" >/dev/null 2>&1
    grep -q "status codes: $n 2xx" "$dir/h2load.$proto" ||
        { log "$name $proto: not every request succeeded"; cat "$dir/h2load.$proto" >&2; return 1; }
    rm -f "$dir"/callgrind.out.*
    callgrind_control -d "$pid" >/dev/null 2>&1
    # The dump is written by the traced process itself: wait until it is complete.
    for _ in $(seq 1 100); do
        f="$(ls "$dir"/callgrind.out.* 2>/dev/null | head -1)"
        if [[ -n "$f" ]]; then
            ir="$(callgrind_annotate "$f" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)"
            [[ "$ir" =~ ^[0-9]+$ ]] && break
        fi
        sleep 0.2
    done
    [[ "$ir" =~ ^[0-9]+$ ]] || { log "$name $proto: no callgrind dump"; return 1; }
    if [[ -n "${CALLGRIND_KEEP:-}" ]]; then
        mkdir -p "$CALLGRIND_KEEP"
        cp "$f" "$CALLGRIND_KEEP/$name.$proto.$n.out"
    fi
    echo "$ir"
}

# Counts one contender: prints "name h1 h2" (instructions per request).
measure() { # name kind [bin]
    local name="$1" kind="$2" port dir pid cookie line=() proto
    port="$(free_port)"
    dir="$work/$name"
    mkdir -p "$dir"
    if [[ "$kind" == nbgate ]]; then start_nbgate "$3" "$port" "$dir" "${4:-}"; else start_nginx "$port" "$dir"; fi
    pid=$!
    pids+=("$pid")
    wait_https "$port"
    if [[ "$kind" == nbgate ]]; then
        cookie="$(login "$port")"
        [[ -n "$cookie" ]] || { log "$name: login failed"; cat "$dir/log.txt" >&2; return 1; }
    else
        cookie="$(head -c 138 /dev/urandom | base64 -w0 | tr '+/' '-_' | head -c 184)"
    fi
    for proto in h1 h2; do
        local args=(-c 4 -m 16)
        [[ "$proto" == h1 ]] && args=(--h1 -c 16 -m 1)
        h2load -n 200 "${args[@]}" -H "cookie: __Host-nbgate-session=$cookie" \
            "https://127.0.0.1:$port/1k" >/dev/null 2>&1
        # Each load opens its connections anew (full TLS handshakes): a short and a long load
        # are counted, and the difference divided by the extra requests cancels them out.
        local small=1000 counts=() n
        for n in "$small" "$((small + N))"; do
            counts+=("$(count "$name" "$proto" "$pid" "$dir" "$n" "$cookie" "$port" "${args[@]}")")
        done
        line+=("$(((counts[1] - counts[0]) / N))")
    done
    kill "$pid" 2>/dev/null || true
    echo "$name ${line[*]}"
}

# Not in $(…): a subshell's started processes would escape the cleanup.
measure nbgate nbgate "$NBGATE_BIN" >>"$work/results"
if [[ -n "${NBGATE_BEFORE_BIN:-}" ]]; then
    measure nbgate-before nbgate "$NBGATE_BEFORE_BIN" >>"$work/results"
fi
if [[ "${NBGATE_METRICS:-0}" == 1 ]]; then
    measure nbgate-metrics nbgate "$NBGATE_BIN" admin >>"$work/results"
fi
measure nginx nginx >>"$work/results"
mapfile -t results <"$work/results"

echo
echo "Instructions per request (callgrind, $N requests, $(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD)):"
echo
echo "| contender | HTTP/1.1 | HTTP/2 |"
echo "|---|---|---|"
for r in "${results[@]}"; do
    read -r name h1 h2 <<<"$r"
    echo "| $name | $h1 | $h2 |"
done
