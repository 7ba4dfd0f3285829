#!/usr/bin/env python3
"""Soak load for nbgate in front of a real Jupyter (issue 20 §4). Driven by benches/soak.sh.

Runs mixed load from several threads for --minutes, samples nbgate's VmRSS and open
descriptors every 10 s, and writes a Markdown report. Exit status: 0 when every criterion
holds, 1 when one fails (the report says which), 2 on a harness error.

Credentials come from the environment (SOAK_USER, SOAK_PASSWORD, SOAK_TOKEN), never argv.

Operations (each one request, or one WebSocket step, timed on its own):
  login        GET /_nbgate/login?next=… (CSRF cookie + hidden field), POST the form with
               Origin: expect 303 and a __Host-nbgate-session cookie. A new session each time.
  bad_login    the same with a wrong password, from 127.0.0.2: expect the form again (401).
               nbgate's lockout (default: 10 failures lock an address) is left at its
               defaults; this worker logs in correctly from 127.0.0.2 after every 5 failures,
               which resets that address's count (see src/policy/lockout.rs), so the address
               never locks. The user name does (50 failures, user_threshold): then a wrong
               password gets 429, recorded as bad_login_locked (see w_bad_login).
  api_*        GET /api/status, /api/kernels, /api/contents, /api/contents/soak with the API
               token (no Origin), and /api/contents with a session cookie.
  ws_open      WebSocket handshake on /api/kernels/ID/channels (token, or cookie + Origin).
  ws_execute   execute_request on channel shell until status idle; checks the result.
  kernel_start / kernel_stop   POST /api/kernels and DELETE /api/kernels/ID (a fresh kernel
               every ~60 s, one execute, then stopped).
  upload       PUT /api/contents/soak/up-N.(txt|bin), JSON text or base64 content, 1 KiB to
               4 MiB (every 5th is 1-4 MiB); token, or cookie + Origin.
  download     GET /files/soak/big.bin (8 MiB written at start): length checked.

5xx attribution: nbgate's own error answers are JSON {"error": code, "message": …,
"status": n} (src/pages.rs error_json; codes such as upstream_unavailable, upstream_timeout)
or its HTML error page. Jupyter's API errors are JSON {"message": …, "reason": …} (tornado's
write_error in jupyter_server's APIHandler) or Jupyter's HTML error page. A 5xx whose body
is nbgate's JSON, or anything not recognisably Jupyter's, counts as nbgate's.
"""

import argparse
import base64
import json
import os
import random
import ssl
import statistics
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from collections import defaultdict
from datetime import datetime, timezone

import requests
import urllib3
import websocket
from requests.adapters import HTTPAdapter

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

T = 120  # per-request timeout, seconds


# ---------------------------------------------------------------- recording


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.lat = defaultdict(list)  # op -> [seconds] (successful and failed alike)
        self.count = defaultdict(int)
        self.errors = defaultdict(int)
        self.error_samples = defaultdict(list)  # op -> first few error descriptions
        self.classes = defaultdict(int)  # "2xx" … "5xx", "transport", "ws message"
        self.codes = defaultdict(int)  # HTTP status -> count
        self.fivexx_nbgate = 0
        self.fivexx_jupyter = 0
        self.fivexx_samples = []
        self.transport = 0

    def record(self, op, secs, ok, status=None, body=b"", err=None, ws=False):
        """ws: a completed WebSocket message exchange (no HTTP status). A socket that fails
        mid-exchange is recorded without ws and status: a transport error."""
        with self.lock:
            self.count[op] += 1
            self.lat[op].append(secs)
            if ws:
                self.classes["ws execute (no HTTP status)"] += 1
            elif status is None:
                self.classes["transport"] += 1
                self.transport += 1
            else:
                self.classes[f"{status // 100}xx"] += 1
                self.codes[status] += 1
                if status >= 500:
                    who = attribute_5xx(body)
                    if who == "jupyter":
                        self.fivexx_jupyter += 1
                    else:
                        self.fivexx_nbgate += 1
                    if len(self.fivexx_samples) < 10:
                        self.fivexx_samples.append(
                            f"{op}: {status} ({who}) {body[:200]!r}"
                        )
            if not ok:
                self.errors[op] += 1
                if len(self.error_samples[op]) < 5:
                    desc = err or f"status {status}: {body[:160]!r}"
                    self.error_samples[op].append(
                        f"{time.strftime('%H:%M:%S')} {desc}"
                    )


def attribute_5xx(body):
    """'nbgate' or 'jupyter' for a 5xx answer's body (see the module doc)."""
    try:
        j = json.loads(body)
    except Exception:
        j = None
    if isinstance(j, dict):
        if isinstance(j.get("error"), str) and "status" in j:
            return "nbgate"
        if "message" in j and "reason" in j:
            return "jupyter"
        return "nbgate"
    text = body[:4000].decode("utf-8", "replace")
    if "nbgate" in text:
        return "nbgate"
    if "jupyter" in text.lower() and ("<html" in text.lower() or "traceback" in text.lower()):
        return "jupyter"
    return "nbgate"


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


# ---------------------------------------------------------------- clients


class SourceAdapter(HTTPAdapter):
    """Binds the client side of every connection to one loopback address."""

    def __init__(self, source, **kw):
        self.source = source
        super().__init__(**kw)

    def init_poolmanager(self, *a, **kw):
        kw["source_address"] = (self.source, 0)
        return super().init_poolmanager(*a, **kw)


def session(source="127.0.0.1"):
    s = requests.Session()
    s.verify = False
    s.trust_env = False
    ad = SourceAdapter(source, pool_connections=4, pool_maxsize=4)
    s.mount("https://", ad)
    return s


def hidden(html, name):
    marker = f'name="{name}" value="'
    i = html.index(marker) + len(marker)
    return html[i : html.index('"', i)]


class Ctx:
    def __init__(self, args, stats):
        self.args = args
        self.stats = stats
        self.base = f"https://localhost:{args.port}"
        self.origin = self.base
        self.ws_base = f"wss://localhost:{args.port}"
        self.user = os.environ["SOAK_USER"]
        self.password = os.environ["SOAK_PASSWORD"]
        self.token = os.environ["SOAK_TOKEN"]
        self.stop = threading.Event()
        self.deadline = time.monotonic() + args.minutes * 60

    def running(self):
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def url(self, path):
        return self.base + path

    def tok(self):
        return {"Authorization": f"token {self.token}", "Accept": "application/json"}

    def timed(self, op, fn, expect, check=None):
        """Runs fn() -> Response; records op. Returns the response or None."""
        t0 = time.perf_counter()
        try:
            r = fn()
            body = r.content
        except Exception as e:  # connection refused/reset, timeout, TLS
            self.stats.record(op, time.perf_counter() - t0, False, err=f"{type(e).__name__}: {e}")
            return None
        dt = time.perf_counter() - t0
        ok = r.status_code in expect
        err = None
        if ok and check is not None:
            err = check(r)
            ok = err is None
        self.stats.record(op, dt, ok, r.status_code, body, err)
        return r if ok else None

    def login(self, s, op, password, expect):
        """Form login as a browser does it. Returns the session cookie pair or None."""
        nxt = "/lab"
        t0 = time.perf_counter()
        try:
            page = s.get(
                self.url("/_nbgate/login?next=" + urllib.parse.quote(nxt, safe="")),
                headers={"Accept": "text/html"},
                timeout=T,
                allow_redirects=False,
            )
            if page.status_code != 200:
                self.stats.record(op, time.perf_counter() - t0, False, page.status_code, page.content)
                return None
            binding = page.cookies.get("__Host-nbgate-csrf")
            csrf = hidden(page.text, "csrf")
            r = s.post(
                self.url("/_nbgate/login"),
                headers={
                    "Origin": self.origin,
                    "Cookie": f"__Host-nbgate-csrf={binding}",
                    "Accept": "text/html",
                },
                data={"username": self.user, "password": password, "csrf": csrf, "next": nxt},
                timeout=T,
                allow_redirects=False,
            )
            s.cookies.clear()
        except Exception as e:
            self.stats.record(op, time.perf_counter() - t0, False, err=f"{type(e).__name__}: {e}")
            return None
        dt = time.perf_counter() - t0
        cookie = None
        for c in r.raw.headers.getlist("Set-Cookie"):
            if c.startswith("__Host-nbgate-session="):
                cookie = c.split(";", 1)[0]
        if r.status_code == 429 and 429 in expect:
            op += "_locked"  # a wrong password while the user name is locked (see w_bad_login)
        ok = r.status_code in expect
        err = None
        if ok and expect == (303,) and not cookie:
            ok, err = False, "303 without a session cookie"
        if ok and expect != (303,) and cookie:
            ok, err = False, "wrong password got a session cookie"
        self.stats.record(op, dt, ok, r.status_code, r.content, err)
        return cookie if ok else None


# ---------------------------------------------------------------- workers


def pace(ctx, secs):
    ctx.stop.wait(secs)


def w_login(ctx):
    """New sessions from 127.0.0.1, each then used once for an API read."""
    while ctx.running():
        s = session()
        cookie = ctx.login(s, "login", ctx.password, (303,))
        if cookie:
            ctx.timed(
                "api_cookie_contents",
                lambda: s.get(ctx.url("/api/contents"), headers={"Cookie": cookie, "Accept": "application/json"}, timeout=T),
                (200,),
            )
        s.close()
        pace(ctx, 0.5)


def w_bad_login(ctx):
    """Wrong passwords from 127.0.0.2; a correct login there after every 5 resets the count.

    The user name's own count (policy.lockout.user_threshold, 50) is not reset by a success,
    so after 50 wrong passwords the name is locked (1 min, doubling up to 5 min). Addresses
    the name logged in from are exempt from that lock: their correct passwords still log in
    (the `login` operations from 127.0.0.1 and 127.0.0.2 check it), while a wrong password
    from them is answered 429 (recorded as bad_login_locked, not an error)."""
    s = session("127.0.0.2")
    ctx.login(s, "login", ctx.password, (303,))  # makes 127.0.0.2 a known address
    n = 0
    while ctx.running():
        ctx.login(s, "bad_login", ctx.password + "-wrong", (401, 429))
        n += 1
        if n % 5 == 0:
            ctx.login(s, "login", ctx.password, (303,))
        pace(ctx, 0.7)


def w_api(ctx, seed):
    """Token-authenticated reads, keep-alive; a fresh connection every 200 requests."""
    rnd = random.Random(seed)
    paths = [
        ("api_status", "/api/status"),
        ("api_kernels", "/api/kernels"),
        ("api_contents", "/api/contents"),
        ("api_contents", "/api/contents/soak"),
    ]
    s = session()
    n = 0
    while ctx.running():
        op, p = rnd.choice(paths)
        ctx.timed(op, lambda: s.get(ctx.url(p), headers=ctx.tok(), timeout=T), (200,))
        n += 1
        if n % 200 == 0:
            s.close()
            s = session()
        pace(ctx, 0.02)


def start_kernel(ctx, s):
    r = ctx.timed(
        "kernel_start",
        lambda: s.post(ctx.url("/api/kernels"), headers=ctx.tok(), json={"name": "python3"}, timeout=T),
        (200, 201),
    )
    return r.json()["id"] if r is not None else None


def ws_open(ctx, kid, cookie=None):
    if cookie:
        hdr = [f"Cookie: {cookie}", f"Origin: {ctx.origin}"]
    else:
        hdr = [f"Authorization: token {ctx.token}"]
    url = f"{ctx.ws_base}/api/kernels/{kid}/channels?session_id={uuid.uuid4().hex}"
    t0 = time.perf_counter()
    try:
        ws = websocket.create_connection(
            url,
            header=hdr,
            sslopt={"cert_reqs": ssl.CERT_NONE, "check_hostname": False},
            timeout=T,
        )
    except websocket.WebSocketBadStatusException as e:
        ctx.stats.record("ws_open", time.perf_counter() - t0, False, e.status_code, e.resp_body or b"")
        return None
    except Exception as e:
        ctx.stats.record("ws_open", time.perf_counter() - t0, False, err=f"{type(e).__name__}: {e}")
        return None
    ctx.stats.record("ws_open", time.perf_counter() - t0, True, 101)
    return ws


def ws_execute(ctx, ws, n):
    """execute_request on shell; waits for status idle; checks the execute_result."""
    msg_id = uuid.uuid4().hex
    msg = {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "session": uuid.uuid4().hex,
            "username": "soak",
            "date": datetime.now(timezone.utc).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": f"sum(range({n}))",
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }
    t0 = time.perf_counter()
    try:
        ws.send(json.dumps(msg))
        result = None
        while True:
            raw = ws.recv()
            if not raw:
                raise RuntimeError("socket closed")
            m = json.loads(raw)
            if m.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            t = m.get("msg_type") or m["header"]["msg_type"]
            if t == "execute_result":
                result = m["content"]["data"]["text/plain"]
            if t == "status" and m["content"]["execution_state"] == "idle":
                break
    except Exception as e:
        ctx.stats.record("ws_execute", time.perf_counter() - t0, False, err=f"{type(e).__name__}: {e}")
        return False
    dt = time.perf_counter() - t0
    want = str(n * (n - 1) // 2)
    ok = result == want
    ctx.stats.record("ws_execute", dt, ok, None, b"", None if ok else f"result {result!r}, want {want}", ws=True)
    return ok


def w_kernel_long(ctx):
    """One kernel, one long-lived token WebSocket; reconnects every 50 executes."""
    s = session()
    kid = start_kernel(ctx, s)
    if not kid:
        return
    ws, n = None, 0
    while ctx.running():
        if ws is None:
            ws = ws_open(ctx, kid)
            if ws is None:
                pace(ctx, 1)
                continue
        if not ws_execute(ctx, ws, 1000 + n):
            ws.close()
            ws = None
        n += 1
        if ws is not None and n % 50 == 0:
            ws.close()
            ws = None
        pace(ctx, 0.1)
    if ws is not None:
        ws.close()


def w_kernel_churn(ctx):
    """Short cookie-authenticated sockets: open, 1-3 executes, close."""
    s = session()
    cookie = ctx.login(s, "login", ctx.password, (303,))
    kid = start_kernel(ctx, s)
    if not (cookie and kid):
        return
    rnd = random.Random(7)
    while ctx.running():
        ws = ws_open(ctx, kid, cookie)
        if ws is not None:
            for _ in range(rnd.randint(1, 3)):
                if not ws_execute(ctx, ws, rnd.randint(10, 10000)):
                    break
            ws.close()
        pace(ctx, 0.3)


def w_kernel_lifecycle(ctx):
    """A fresh kernel every ~60 s: start, one execute, stop."""
    s = session()
    while ctx.running():
        kid = start_kernel(ctx, s)
        if kid:
            ws = ws_open(ctx, kid)
            if ws is not None:
                ws_execute(ctx, ws, 100)
                ws.close()
            ctx.timed(
                "kernel_stop",
                lambda: s.delete(ctx.url(f"/api/kernels/{kid}"), headers=ctx.tok(), timeout=T),
                (204,),
            )
        pace(ctx, 60)


def w_upload(ctx):
    rnd = random.Random(11)
    s = session()
    cs = session()
    cookie = ctx.login(cs, "login", ctx.password, (303,))
    n = 0
    while ctx.running():
        n += 1
        size = rnd.randint(1 << 20, 4 << 20) if n % 5 == 0 else rnd.randint(1 << 10, 64 << 10)
        if n % 2:
            name, model = f"up-{n % 8}.txt", {
                "type": "file",
                "format": "text",
                "content": ("soak line %d\n" % n) * (size // 14 + 1),
            }
        else:
            name, model = f"up-{n % 8}.bin", {
                "type": "file",
                "format": "base64",
                "content": base64.b64encode(rnd.randbytes(size)).decode(),
            }
        body = json.dumps(model)
        if n % 3 == 0 and cookie:
            sess, hdr = cs, {"Cookie": cookie, "Origin": ctx.origin, "Content-Type": "application/json"}
        else:
            sess, hdr = s, {**ctx.tok(), "Content-Type": "application/json"}
        ctx.timed(
            "upload",
            lambda: sess.put(ctx.url(f"/api/contents/soak/{name}"), data=body, headers=hdr, timeout=T),
            (200, 201),
        )
        pace(ctx, 0.3)


def w_download(ctx):
    s = session()
    want = ctx.args.big_size

    def check(r):
        return None if len(r.content) == want else f"{len(r.content)} bytes, want {want}"

    while ctx.running():
        ctx.timed("download", lambda: s.get(ctx.url("/files/soak/big.bin"), headers=ctx.tok(), timeout=T), (200,), check)
        pace(ctx, 0.5)


# ---------------------------------------------------------------- sampling


def sample(pid):
    rss = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])  # KiB
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def w_sampler(ctx, samples, t_start):
    while True:
        t = time.monotonic() - t_start
        try:
            rss, fds = sample(ctx.args.pid)
        except (FileNotFoundError, ProcessLookupError):
            samples.append((t, None, None))
            ctx.stop.set()
            return
        samples.append((t, rss, fds))
        if not ctx.running():
            return
        ctx.stop.wait(min(10, max(0.1, ctx.deadline - time.monotonic())))


# ---------------------------------------------------------------- report


def report(args, stats, samples, elapsed):
    lines = []
    p = lines.append
    warm = min(120.0, args.minutes * 60 / 5)  # the "start" sample: minute 2 of a 10-minute run
    live = [x for x in samples if x[1] is not None]
    start = min(live, key=lambda x: abs(x[0] - warm)) if live else None
    end = live[-1] if live else None
    died = any(x[1] is None for x in samples)
    rss_ok = fd_ok = False
    if start and end:
        rss_limit = start[1] * 1.10 + 8 * 1024
        fd_limit = start[2] * 1.10 + 10
        rss_ok = end[1] <= rss_limit
        fd_ok = end[2] <= fd_limit
    total = sum(stats.count.values())
    ops_without_success = [op for op in stats.count if stats.count[op] == stats.errors[op]]
    crit = [
        ("no 5xx caused by nbgate", stats.fivexx_nbgate == 0, f"{stats.fivexx_nbgate} (Jupyter's own: {stats.fivexx_jupyter})"),
        ("no transport errors (reset, refused, timeout)", stats.transport == 0, str(stats.transport)),
        ("RSS flat: end <= start x 1.10 + 8 MiB", rss_ok, f"{start[1] / 1024:.1f} -> {end[1] / 1024:.1f} MiB" if start else "no samples"),
        ("open fds flat: end <= start x 1.10 + 10", fd_ok, f"{start[2]} -> {end[2]}" if start else "no samples"),
        ("nbgate alive to the end", not died, "yes" if not died else "exited during the run"),
        ("every operation succeeded at least once", not ops_without_success and total > 0, ", ".join(ops_without_success) or "yes"),
    ]
    passed = all(c[1] for c in crit)

    p("# nbgate soak report")
    p("")
    p(f"- Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; binary: `{args.binary}` ({args.build}); commit {args.commit}")
    p(f"- Duration: {elapsed / 60:.1f} min of load (`SOAK_MINUTES={args.minutes:g}`); Jupyter: `{args.jupyter}`; machine: {os.cpu_count()} cores")
    p(f"- Result: **{'PASS' if passed else 'FAIL'}**")
    p("")
    p("| criterion | ok | value |")
    p("|---|---|---|")
    for name, ok, val in crit:
        p(f"| {name} | {'yes' if ok else '**NO**'} | {val} |")
    p("")
    p(f"Start = the sample nearest minute {warm / 60:g} (after warm-up: pools, caches, the first kernels), end = the last sample.")
    p("")
    p("## Status classes (every HTTP answer and WebSocket step)")
    p("")
    p("| class | count |")
    p("|---|---:|")
    for k in sorted(stats.classes):
        p(f"| {k} | {stats.classes[k]} |")
    p("")
    p("By status: " + ", ".join(f"{c}: {n}" for c, n in sorted(stats.codes.items())) + ".")
    p("")
    p("A 5xx is nbgate's when its body is nbgate's JSON error (`{\"error\": code, \"message\", \"status\"}`, e.g. `upstream_unavailable`) or anything not recognisably Jupyter's; Jupyter's own are its `{\"message\", \"reason\"}` JSON or its HTML error page.")
    if stats.fivexx_samples:
        p("")
        p("5xx seen:")
        for s in stats.fivexx_samples:
            p(f"- `{s}`")
    p("")
    p("## Operations")
    p("")
    p("| operation | count | errors | p50 ms | p99 ms | max ms |")
    p("|---|---:|---:|---:|---:|---:|")
    for op in sorted(stats.count):
        xs = stats.lat[op]
        p(f"| {op} | {stats.count[op]} | {stats.errors[op]} | {pct(xs, 50) * 1000:.1f} | {pct(xs, 99) * 1000:.1f} | {max(xs) * 1000:.1f} |")
    p("")
    p(f"Total: {total} operations, {total / max(elapsed, 1):.1f}/s.")
    if any(stats.error_samples.values()):
        p("")
        p("First errors per operation:")
        for op in sorted(stats.error_samples):
            for e in stats.error_samples[op]:
                p(f"- {op}: `{e}`")
    p("")
    p("## nbgate RSS and open descriptors (every 10 s)")
    p("")
    p("| t (s) | VmRSS MiB | fds |")
    p("|---:|---:|---:|")
    for t, rss, fds in samples:
        if rss is None:
            p(f"| {t:.0f} | (exited) | |")
        else:
            p(f"| {t:.0f} | {rss / 1024:.1f} | {fds} |")
    if live:
        p("")
        p(f"Peak VmRSS {max(x[1] for x in live) / 1024:.1f} MiB, peak fds {max(x[2] for x in live)}.")
    return "\n".join(lines) + "\n", passed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="nbgate's pid")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--big-size", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--binary", default="nbgate")
    ap.add_argument("--build", default="?")
    ap.add_argument("--commit", default="?")
    ap.add_argument("--jupyter", default="jupyter server")
    args = ap.parse_args()

    stats = Stats()
    ctx = Ctx(args, stats)
    samples = []
    t_start = time.monotonic()
    workers = [
        ("sampler", lambda: w_sampler(ctx, samples, t_start)),
        ("login", lambda: w_login(ctx)),
        ("bad_login", lambda: w_bad_login(ctx)),
        ("api-1", lambda: w_api(ctx, 1)),
        ("api-2", lambda: w_api(ctx, 2)),
        ("kernel-long", lambda: w_kernel_long(ctx)),
        ("kernel-churn", lambda: w_kernel_churn(ctx)),
        ("kernel-lifecycle", lambda: w_kernel_lifecycle(ctx)),
        ("upload", lambda: w_upload(ctx)),
        ("download", lambda: w_download(ctx)),
    ]

    def run(i, name, fn):
        # Staggered: the workers' first logins and first token use (PBKDF2, at most
        # auth.max_concurrent_verifications at once) would otherwise all land at once.
        if i:
            ctx.stop.wait(0.5 * i)
        try:
            fn()
        except Exception:
            print(f"[soak.py] worker {name} crashed:\n{traceback.format_exc()}", file=sys.stderr)
            stats.record(name + "_crash", 0, False, err=traceback.format_exc(limit=2))

    threads = [threading.Thread(target=run, args=(i, *w), name=w[0], daemon=True) for i, w in enumerate(workers)]
    for th in threads:
        th.start()
    try:
        next_note = 60
        while any(th.is_alive() for th in threads[:1]) and ctx.running():
            time.sleep(1)
            el = time.monotonic() - t_start
            if el >= next_note:
                with stats.lock:
                    tot = sum(stats.count.values())
                    errs = sum(stats.errors.values())
                last = samples[-1] if samples else (0, 0, 0)
                print(
                    f"[soak.py] {el / 60:.0f} min: {tot} ops, {errs} errors, 5xx nbgate {stats.fivexx_nbgate}, "
                    f"RSS {(last[1] or 0) / 1024:.1f} MiB, fds {last[2]}",
                    file=sys.stderr,
                    flush=True,
                )
                next_note += 60
    except KeyboardInterrupt:
        ctx.stop.set()
        print("[soak.py] interrupted", file=sys.stderr)
        sys.exit(130)
    ctx.stop.set()
    for th in threads:
        th.join(timeout=T + 10)
    elapsed = time.monotonic() - t_start
    text, passed = report(args, stats, samples, elapsed)
    with open(args.out, "w") as f:
        f.write(text)
    sys.stdout.write(text)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
