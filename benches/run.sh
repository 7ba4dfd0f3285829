#!/usr/bin/env bash
# The benchmark of issue 6: nbgate against nginx, Caddy and a direct connection, side by side.
#
#   bash benches/run.sh            full run (about 25 minutes on 2 cores), writes benches/REPORT.md
#   bash benches/run.sh --quick    smoke run (1 round, 2 s per measure, 256 MiB bodies, 1000 tunnels)
#
# Other options are passed to the harness (benches/loadgen/main.rs):
#   --only h1,h2,tls_full,tls_resumed,tls_resumed_x25519,ws_rtt,ws_rtt_h2,ws_throughput,large_body,
#          idle,idle_h2,isolation,kernel
#   --contenders direct,nbgate,nginx,caddy,nbgate-metrics,nbgate-audit   --rounds N   --secs N   --out DIR   --venv DIR
#
# Environment:
#   NBGATE_TEST_VENV      Python venv with jupyter-server + ipykernel for the kernel round trip
#                         (default: <repo>/.venv; `bash tests/run.sh` creates it).
#   NBGATE_BENCH_POLICY   TOML for nbgate's [policy] section (default: benches/policy.toml if present).
#   SKIP_MICRO=1          skip the criterion micro benches.
#   SKIP_INSTRUCTIONS=1   skip the callgrind instruction counts (benches/instructions.sh).
#
# Installs (Debian, when missing): nginx, caddy, wrk, gnuplot-nox (and, for the instruction
# counts, valgrind and nghttp2-client). Every process it starts is
# stopped on exit, also on failure or Ctrl-C.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
log() { printf '[benches/run.sh] %s\n' "$*" >&2; }
# shellcheck source=benches/lib.sh
source "$repo/benches/lib.sh"
install_missing nginx caddy wrk gnuplot-nox

# 10,000 idle tunnels need 2 descriptors each in the proxy: raise the soft limit as far as allowed.
hard="$(ulimit -Hn)"
if [[ "$hard" == unlimited ]] || ((hard > 65536)); then ulimit -n 65536; else ulimit -n "$hard"; fi
log "open files limit: $(ulimit -n)"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
log "building (release)"
cargo build --release --quiet
cargo bench --no-run --quiet --bench loadgen --bench micro 2>/dev/null
export NBGATE_BIN="$CARGO_TARGET_DIR/release/nbgate"
export NBGATE_TEST_VENV="${NBGATE_TEST_VENV:-$repo/.venv}"
if [[ -z "${NBGATE_BENCH_POLICY:-}" && -f benches/policy.toml ]]; then
    NBGATE_BENCH_POLICY="$(cat benches/policy.toml)"
    export NBGATE_BENCH_POLICY
fi

out=benches
for ((i = 1; i <= $#; i++)); do
    if [[ "${!i}" == --out ]]; then j=$((i + 1)); out="${!j}"; fi
done
mkdir -p "$out/raw"

quick=0
for a in "$@"; do [[ "$a" == --quick ]] && quick=1; done
if [[ "${SKIP_MICRO:-0}" != 1 ]]; then
    times=(--warm-up-time 1 --measurement-time 3)
    ((quick)) && times=(--warm-up-time 0.5 --measurement-time 1)
    log "micro benches"
    cargo bench --quiet --bench micro -- "${times[@]}" | tee "$out/raw/micro.txt"
    if [[ -f benches/policy.rs ]]; then
        cargo bench --quiet --bench policy -- "${times[@]}" | tee "$out/raw/policy.txt"
    fi
fi

# The harness runs in its own process group; the trap stops that group (the harness and
# everything it started) however this script ends.
pgid=""
cleanup() { [[ -n "$pgid" ]] && kill -TERM -- "-$pgid" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
log "load runs: loadgen run $*"
setsid cargo bench --quiet --bench loadgen -- run "$@" --venv "$NBGATE_TEST_VENV" &
pgid=$!
wait "$pgid"
pgid=""

# Instructions per request: a figure that repeats to ±0.3% where CPU time drifts ±15%.
if [[ "${SKIP_INSTRUCTIONS:-0}" != 1 && "$quick" == 0 && -f "$out/REPORT.md" ]]; then
    log "instructions per request (callgrind): benches/instructions.sh"
    if table="$(bash benches/instructions.sh)"; then
        {
            echo
            echo "## Instructions per request (callgrind)"
            echo
            echo "\`bash benches/instructions.sh\` (run by \`benches/run.sh\`): user-space instructions per proxied"
            echo "1 KiB request, one worker under valgrind, h2load load (HTTP/2: 4 connections × 16 streams;"
            echo "HTTP/1.1: 16 connections), session cookie on every request; the loads' TLS handshakes are"
            echo "subtracted out. Repeats to ±0.3% between runs; kernel time and cache misses are not in it."
            echo
            sed -n '/^|/p' <<<"$table"
        } >>"$out/REPORT.md"
    else
        log "benches/instructions.sh failed; REPORT.md has no instruction counts"
    fi
fi
log "done: $out/REPORT.md"
