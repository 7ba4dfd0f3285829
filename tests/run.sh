#!/usr/bin/env bash
# The project's one test command: `bash tests/run.sh [extra cargo test args]`.
#
# On a fresh Debian 12 machine with the Rust toolchain and Python 3.11 it installs what the
# integration tests start for real (Debian packages, a Python venv with Jupyter), then runs
# `cargo test --all-targets`. Every step is idempotent: a second run only runs the tests.
#
# Environment:
#   NBGATE_TEST_VENV  where the Python venv lives (default: <repo>/.venv); exported for the tests.
#   PYTHON            the interpreter that creates the venv (default: python3).
#   NBGATE_TEST_NODE  where npm installs the Node packages the tests start (default: <repo>/.node);
#                     exported for the tests.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# Debian packages the tests start: chromium (browser tests), pebble (ACME tests: pebble and
# pebble-challtestsrv), fail2ban (its fail2ban-regex checks the shipped filter against real
# log lines), testssl.sh (the TLS audit in tests/tls_audit.rs), openssl (its s_client sends an
# IP address as SNI in tests/faults.rs), python3 (Debian's, which uid 65534 can run: the
# `nbgate run --user` test's child), systemd (systemd-analyze verify/security on the shipped
# units in tests/systemd_units.rs, and systemd-socket-activate; no systemd runs), prometheus
# (its promtool checks config/prometheus/alerts.yml in tests/metrics.rs; no Prometheus runs).
APT_PACKAGES=(chromium pebble fail2ban testssl.sh openssl python3 systemd prometheus)
# What the test venv holds; changing this list re-runs pip on the next run.
# `notebook` (7.x): `nbgate run -- jupyter notebook` is tested too. `jupyterhub`: JupyterHub
# behind nbgate (tests/jupyterhub.rs). jupyter-collaboration: real-time collaboration for
# tests/identity.rs (it enables itself for every Jupyter of the venv; `ensure_venv` switches
# RTC off there by default).
PY_REQUIREMENTS=(jupyter-server ipykernel jupyterlab notebook terminado websocket-client requests playwright jupyterhub jupyter-collaboration)
# Node packages (npm; Node itself must be on the machine): JupyterHub's proxy, and the
# certified OpenID provider library the single sign-on tests start (tests/oidc/provider.mjs).
NODE_REQUIREMENTS=(configurable-http-proxy@5 oidc-provider@9)

export NBGATE_TEST_VENV="${NBGATE_TEST_VENV:-$repo/.venv}"
export NBGATE_TEST_NODE="${NBGATE_TEST_NODE:-$repo/.node}"
PYTHON="${PYTHON:-python3}"

log() { printf '[tests/run.sh] %s\n' "$*" >&2; }

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# Installs the named Debian packages that are not installed yet; `apt-get update` runs at most
# once, and only when something is missing.
ensure_apt_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        log "apt: nothing to install (${*:-no packages required})"
        return
    fi
    log "apt: installing ${missing[*]}"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
}

# Creates the venv if it is missing or broken, and runs pip only when the stamp file does not
# match the requirement list and interpreter version.
ensure_venv() {
    local stamp="$NBGATE_TEST_VENV/.nbgate-requirements"
    local want
    want="$("$PYTHON" --version 2>&1) ${PY_REQUIREMENTS[*]}"

    if ! "$NBGATE_TEST_VENV/bin/python" -c 'import sys' 2>/dev/null; then
        log "venv: creating $NBGATE_TEST_VENV with $("$PYTHON" --version 2>&1)"
        rm -rf "$NBGATE_TEST_VENV"
        "$PYTHON" -m venv "$NBGATE_TEST_VENV"
    fi
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        log "venv: $NBGATE_TEST_VENV is up to date (${PY_REQUIREMENTS[*]})"
        return
    fi
    log "venv: pip install ${PY_REQUIREMENTS[*]}"
    "$NBGATE_TEST_VENV/bin/python" -m pip install --disable-pip-version-check \
        --progress-bar off -q --upgrade pip
    "$NBGATE_TEST_VENV/bin/python" -m pip install --disable-pip-version-check \
        --progress-bar off -q --upgrade "${PY_REQUIREMENTS[@]}"
    "$NBGATE_TEST_VENV/bin/jupyter" server --version >/dev/null
    # Real-time collaboration off for every Jupyter of the venv: only tests/identity.rs turns
    # it on (`--YDocExtension.disable_rtc=False`); the others keep the plain document model.
    # (Not in jupyter_server_config.d: Jupyter reads only extension switches from there.)
    mkdir -p "$NBGATE_TEST_VENV/etc/jupyter"
    printf '{"YDocExtension": {"disable_rtc": true}}\n' \
        >"$NBGATE_TEST_VENV/etc/jupyter/jupyter_server_config.json"
    printf '%s' "$want" >"$stamp"
    log "venv: ready"
}

# Installs the Node packages under $NBGATE_TEST_NODE; npm runs only when the stamp file does not
# match the requirement list and Node's version.
ensure_node_packages() {
    local stamp="$NBGATE_TEST_NODE/.nbgate-requirements"
    local want
    if ! command -v npm >/dev/null; then
        log "node: npm is missing: install Node.js (20 or later) for tests/jupyterhub.rs and tests/oidc.rs"
        return 1
    fi
    want="node $(node --version) ${NODE_REQUIREMENTS[*]}"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        log "node: $NBGATE_TEST_NODE is up to date (${NODE_REQUIREMENTS[*]})"
        return
    fi
    log "node: npm install ${NODE_REQUIREMENTS[*]}"
    mkdir -p "$NBGATE_TEST_NODE"
    npm install --prefix "$NBGATE_TEST_NODE" --no-audit --no-fund --loglevel=error \
        "${NODE_REQUIREMENTS[@]}"
    "$NBGATE_TEST_NODE/node_modules/.bin/configurable-http-proxy" --version >/dev/null
    test -f "$NBGATE_TEST_NODE/node_modules/oidc-provider/package.json"
    printf '%s' "$want" >"$stamp"
    log "node: ready"
}

apt_packages=("${APT_PACKAGES[@]}")
# Debian's own python3 ships `venv` without ensurepip; that lives in python3-venv.
if [[ "$(command -v "$PYTHON")" == /usr/bin/* ]] && ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
    apt_packages+=(python3-venv)
fi
ensure_apt_packages "${apt_packages[@]}"
ensure_venv
ensure_node_packages

# The whole suite (no arguments, as CI runs it) also enforces formatting and lints: a tree that
# is not `cargo fmt` clean or has a clippy warning fails like a failing test.
if (($# == 0)); then
    log "cargo fmt --check"
    cargo fmt --all -- --check
    log "cargo clippy --all-targets -- -D warnings"
    cargo clippy --all-targets --quiet -- -D warnings
fi

# The build's size is a known CI failure (a cold build once ran the disk full): say what is free
# before it, and what the target directory holds after it, so a log shows how close it was.
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
mkdir -p "$target_dir"
log "disk: $(df -h --output=avail "$target_dir" | tail -1 | tr -d ' ') free under $target_dir"

# All targets unless the caller picked some (e.g. `bash tests/run.sh --test tls`).
targets=(--all-targets)
for arg in "$@"; do
    [[ "$arg" == -- ]] && break
    case "$arg" in
        --lib | --bins | --bin | --bin=* | --tests | --test | --test=* | --benches | --bench | \
            --bench=* | --examples | --example | --example=* | --doc | --all-targets)
            targets=()
            ;;
    esac
done
# --no-fail-fast: one failing test binary must not hide the results of the others.
log "cargo test ${targets[*]} --no-fail-fast $*"
status=0
cargo test "${targets[@]}" --no-fail-fast "$@" || status=$?
log "disk: $(du -sh "$target_dir" | cut -f1) in $target_dir, $(df -h --output=avail "$target_dir" | tail -1 | tr -d ' ') free"
if ((status != 0)); then
    log "FAILED (cargo test exit code $status)"
    exit "$status"
fi
log "all tests passed"
