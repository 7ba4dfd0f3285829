#!/usr/bin/env bash
# Soak test (issue 20 §4): SOAK_MINUTES (default 10) of mixed load against `nbgate run` in
# front of a real Jupyter Server, then a report (stdout and benches/soak-report.md):
# status classes with every 5xx attributed to nbgate or Jupyter, nbgate's VmRSS and open
# descriptors every 10 s (start = minute 2, end = last; flat = end <= start x 1.10 + slack),
# and count, errors, p50/p99 per operation. The load itself is benches/soak.py.
#
#   bash benches/soak.sh                   10 minutes, release build
#   SOAK_MINUTES=1 bash benches/soak.sh    a short run
#   bash benches/soak.sh --out FILE        report elsewhere
#
# Environment:
#   SOAK_MINUTES      minutes of load (default 10)
#   NBGATE_BIN        nbgate binary to test (default: `cargo build --release`, ~10 min on 2 cores)
#   NBGATE_BIN_DESC   what that binary is, for the report (e.g. "debug build")
#   NBGATE_TEST_VENV  venv with jupyter-server, ipykernel, requests, websocket-client
#                     (default: <repo>/.venv; `bash tests/run.sh` creates it)
#   SOAK_PORT         HTTPS port (default: a free one)
#   SOAK_KEEP=1       keep the temp directory (config, nbgate.log) also after a pass
#
# Not part of the default test command. Exits 0 when every criterion holds, 1 when one fails,
# 2 when the harness itself cannot run. Every process it starts is stopped on exit, also on
# failure or Ctrl-C. The temp directory (with nbgate's log) is kept when the run fails.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[benches/soak.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

out="$repo/benches/soak-report.md"
while (($#)); do
    case "$1" in
        --out) out="${2:?--out needs a file}"; shift 2 ;;
        --out=*) out="${1#--out=}"; shift ;;
        -h | --help) sed -n '2,23p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

minutes="${SOAK_MINUTES:-10}"
[[ "$minutes" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "SOAK_MINUTES must be a number of minutes"
venv="${NBGATE_TEST_VENV:-$repo/.venv}"
py="$venv/bin/python"
[[ -x "$py" && -x "$venv/bin/jupyter" ]] || die "no venv with Jupyter at $venv (set NBGATE_TEST_VENV, or run bash tests/run.sh)"
"$py" -c 'import requests, websocket, jupyter_server, ipykernel' 2>/dev/null ||
    die "$venv lacks one of requests, websocket-client, jupyter-server, ipykernel"

if [[ -n "${NBGATE_BIN:-}" ]]; then
    bin="$NBGATE_BIN"
    build="${NBGATE_BIN_DESC:-NBGATE_BIN}"
else
    log "building (release): cargo build --release"
    (cd "$repo" && cargo build --release --quiet)
    bin="${CARGO_TARGET_DIR:-$repo/target}/release/nbgate"
    build="release build"
fi
[[ -x "$bin" ]] || die "no nbgate binary at $bin"
commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"
if [[ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then commit+=" (+ uncommitted changes)"; fi

tmp="$(mktemp -d /tmp/nbgate-soak.XXXXXX)"
nbgate_pid=""
jupyter_pid=""
load_pid=""
keep="${SOAK_KEEP:-0}"

# Running (a zombie child, ended but not yet reaped, is not).
alive() {
    local state
    [[ -n "$1" ]] || return 1
    state="$(sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [[ -n "$state" && "$state" != Z ]]
}
# shellcheck disable=SC2317  # called from the EXIT trap
# Waits up to $2 tenths of a second for pid $1 to end.
wait_gone() {
    local i
    for ((i = 0; i < $2; i++)); do alive "$1" || return 0; sleep 0.1; done
    return 1
}

# shellcheck disable=SC2317  # the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if alive "$load_pid"; then kill -TERM "$load_pid" 2>/dev/null || true; wait_gone "$load_pid" 50 || kill -KILL "$load_pid" 2>/dev/null || true; fi
    if alive "$nbgate_pid"; then
        # nbgate forwards SIGTERM to Jupyter, which stops its kernels; shutdown_grace is 5 s.
        kill -TERM "$nbgate_pid" 2>/dev/null || true
        wait_gone "$nbgate_pid" 150 || { log "nbgate still running after 15 s: SIGKILL"; kill -KILL "$nbgate_pid" 2>/dev/null || true; }
    fi
    # Jupyter runs in its own process group (its kernels in theirs); nbgate's exit also sends
    # it SIGTERM (PR_SET_PDEATHSIG). Make sure that group is gone.
    if alive "$jupyter_pid"; then
        kill -TERM -- "-$jupyter_pid" 2>/dev/null || kill -TERM "$jupyter_pid" 2>/dev/null || true
        wait_gone "$jupyter_pid" 100 || kill -KILL -- "-$jupyter_pid" 2>/dev/null || true
    fi
    wait 2>/dev/null || true
    if ((rc != 0)) || [[ "$keep" == 1 ]]; then
        log "kept $tmp (config, nbgate.log, jupyter root)"
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- configuration: one user with a password and an API token (PBKDF2 hashes) ---------
user=soak
password="$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
token="$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')"
password_hash="$(printf '%s\n' "$password" | "$bin" hash-password)"
token_hash="$(printf '%s\n' "$token" | "$bin" hash-password)"

port="${SOAK_PORT:-$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
mkdir -p "$tmp/state" "$tmp/root/soak" "$tmp/runtime" "$tmp/data" "$tmp/config"
chmod 700 "$tmp/state"
cat >"$tmp/nbgate.toml" <<EOF
# Written by benches/soak.sh. Defaults everywhere except:
[server]
shutdown_grace = "5s"

[policy.rate_limit]
# All load comes from loopback: one address carries many users' traffic, so the
# logged-in budget (default 200/s, burst 1000, per address) is raised. The anonymous
# budget (login pages: 10/s, burst 40) stays at its default.
logged_in_requests_per_second = 100000
logged_in_burst = 100000

# [policy.lockout] stays at its defaults (10 failures lock an address): the bad logins
# come from 127.0.0.2 and a correct login there after every 5 failures resets its count.

[[users]]
name = "$user"
password_hash = "$password_hash"
tokens = ["$token_hash"]
EOF
"$bin" check-config --config "$tmp/nbgate.toml" >/dev/null || die "nbgate check-config refused $tmp/nbgate.toml"

# The download: 8 MiB of random bytes, made before Jupyter starts.
big_size=$((8 * 1024 * 1024))
head -c "$big_size" /dev/urandom >"$tmp/root/soak/big.bin"

# --- start: nbgate run -- jupyter server ------------------------------------------------
jupyter_cmd=("$venv/bin/jupyter" server "--ServerApp.root_dir=$tmp/root")
log "starting $bin run on 127.0.0.1:$port ($build) -- ${jupyter_cmd[*]}"
JUPYTER_RUNTIME_DIR="$tmp/runtime" JUPYTER_DATA_DIR="$tmp/data" JUPYTER_CONFIG_DIR="$tmp/config" \
    IPYTHONDIR="$tmp/ipython" RUST_LOG="${RUST_LOG:-info}" \
    "$bin" run --config "$tmp/nbgate.toml" --state-dir "$tmp/state" --listen "127.0.0.1:$port" \
    --allow-root -- "${jupyter_cmd[@]}" >"$tmp/nbgate.log" 2>&1 </dev/null &
nbgate_pid=$!

# Ready when /_nbgate/health answers 200 through TLS (self-signed: not verified) and
# Jupyter answers /api/status through nbgate with the token.
ready=0
for ((i = 0; i < 1800; i++)); do
    alive "$nbgate_pid" || { tail -n 40 "$tmp/nbgate.log" >&2; die "nbgate exited during start-up"; }
    if "$py" - "$port" "$token" <<'PY' 2>/dev/null; then ready=1; break; fi
import sys, requests, urllib3
urllib3.disable_warnings()
port, token = sys.argv[1], sys.argv[2]
base = f"https://127.0.0.1:{port}"
ok = requests.get(f"{base}/_nbgate/health", verify=False, timeout=2).status_code == 200
ok = ok and requests.get(f"{base}/api/status", verify=False, timeout=5,
                         headers={"Authorization": f"token {token}"}).status_code == 200
sys.exit(0 if ok else 1)
PY
    sleep 0.2
done
((ready)) || { tail -n 40 "$tmp/nbgate.log" >&2; die "nbgate not ready after 6 minutes"; }
jupyter_pid="$(pgrep -P "$nbgate_pid" | head -n 1 || true)"
log "ready (nbgate pid $nbgate_pid, jupyter pid ${jupyter_pid:-?}); ${minutes} min of load"

# --- load and report --------------------------------------------------------------------
set +e
SOAK_USER="$user" SOAK_PASSWORD="$password" SOAK_TOKEN="$token" \
    "$py" "$repo/benches/soak.py" --port "$port" --pid "$nbgate_pid" --minutes "$minutes" \
    --big-size "$big_size" --out "$out" --binary "$bin" --build "$build" --commit "$commit" \
    --jupyter "nbgate run -- jupyter server (jupyter_server $("$py" -c 'import jupyter_server; print(jupyter_server.__version__)'))" &
load_pid=$!
wait "$load_pid"
rc=$?
load_pid=""
set -e

warns="$(grep -cE ' (WARN|ERROR) ' "$tmp/nbgate.log" || true)"
{
    printf '\n## nbgate log\n\n'
    printf '%s WARN/ERROR lines in nbgate.log (login failures are WARN audit events)' "$warns"
    if ((warns > 0)); then
        printf '; by kind (first 80 characters from the level):\n\n```\n'
        grep -E ' (WARN|ERROR) ' "$tmp/nbgate.log" | sed -E 's/^.* (WARN|ERROR) /\1 /' | cut -c1-80 |
            sed -E 's/[0-9]+(\.[0-9]+)*/N/g' | sort | uniq -c | sort -rn | head -n 15
        printf '```\n'
    else
        printf '.\n'
    fi
} | tee -a "$out"
case "$rc" in
    0) log "PASS; report: $out" ;;
    1) log "FAIL (see the criteria in $out)" ;;
    *) log "soak.py failed (exit $rc)" ;;
esac
exit "$rc"
