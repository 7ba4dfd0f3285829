#!/usr/bin/env python3
"""API-client end-to-end test: use nbgate like VS Code / jupyter_client do, with an API token.

Run by the Rust integration tests with the test venv's python. See README.md.
Exit 0 and a final line "OK" on success; exit 1 with a one-line reason on stderr on failure.
"""

import argparse
import datetime
import json
import os
import ssl
import sys
import time
import urllib.parse
import uuid

import requests
import websocket  # websocket-client

from harness import Fail, report, step

HTTP_TIMEOUT = 30  # seconds, per HTTP request
WS_TIMEOUT = 30  # seconds, WebSocket handshake and each receive
KERNEL_START_TIMEOUT = 60  # seconds until the kernel answers kernel_info
EXEC_TIMEOUT = 60  # seconds per execute_request round trip


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True, help="base URL, e.g. https://localhost:8443")
    ap.add_argument("--cafile", help="PEM certificate(s) to verify nbgate's TLS certificate")
    ap.add_argument(
        "--expect-fail",
        action="store_true",
        help="the token in NBGATE_TEST_TOKEN is wrong: check that nbgate refuses it (401)",
    )
    ap.add_argument(
        "--insecure-http",
        action="store_true",
        help="development only: allow an http:// URL (e.g. a plain jupyter server)",
    )
    args = ap.parse_args()
    args.url = args.url.rstrip("/")
    scheme = urllib.parse.urlsplit(args.url).scheme
    if scheme == "http" and not args.insecure_http:
        ap.error("http:// URLs need --insecure-http (development only)")
    if scheme not in ("http", "https"):
        ap.error("--url must be http(s)://host:port")
    if scheme == "https" and not args.cafile:
        ap.error("--cafile is required for https:// (TLS is always verified)")
    args.token = os.environ.get("NBGATE_TEST_TOKEN", "")
    if not args.token:
        ap.error("NBGATE_TEST_TOKEN must be set in the environment")
    return args


def ws_url(args, path, token):
    u = urllib.parse.urlsplit(args.url)
    scheme = "wss" if u.scheme == "https" else "ws"
    q = urllib.parse.urlencode({"token": token})
    return f"{scheme}://{u.netloc}{path}?{q}"


def ws_connect(args, url):
    sslopt = None
    if url.startswith("wss:"):
        sslopt = {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": args.cafile, "check_hostname": True}
    # No Origin header: non-browser clients (jupyter_client, VS Code's node client) send none.
    return websocket.create_connection(
        url, timeout=WS_TIMEOUT, sslopt=sslopt, suppress_origin=True, enable_multithread=False
    )


def http(session, method, args, path, expect, **kw):
    try:
        r = session.request(method, args.url + path, timeout=HTTP_TIMEOUT, **kw)
    except requests.exceptions.SSLError as e:
        raise Fail(f"{method} {path}: TLS verification failed: {e}")
    except requests.exceptions.RequestException as e:
        raise Fail(f"{method} {path}: {type(e).__name__}: {e}")
    if r.status_code != expect:
        body = r.text[:200].replace("\n", " ")
        raise Fail(f"{method} {path}: status {r.status_code}, expected {expect}; body: {body!r}")
    return r


def new_session(args):
    s = requests.Session()
    # trust_env=False: otherwise REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment
    # silently replace session.verify (and env proxies would apply to localhost).
    s.trust_env = False
    s.verify = args.cafile if args.cafile else True
    return s


def new_msg(msg_type, content, session_id):
    msg_id = uuid.uuid4().hex
    return msg_id, {
        "header": {
            "msg_id": msg_id,
            "msg_type": msg_type,
            "session": session_id,
            "username": "nbgate-test",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": "shell",
        "buffers": [],
    }


def recv_json(ws, deadline, what):
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Fail(f"timed out waiting for {what}")
        ws.settimeout(min(left, WS_TIMEOUT))
        try:
            frame = ws.recv()
        except websocket.WebSocketTimeoutException:
            continue
        except websocket.WebSocketConnectionClosedException:
            raise Fail(f"WebSocket closed while waiting for {what}")
        if isinstance(frame, bytes):
            # binary frames carry buffers (v1 protocol); this client never negotiates them
            continue
        return json.loads(frame)


def wait_kernel_info(ws, session_id):
    """Send kernel_info_request until a reply arrives (a fresh kernel may miss the first)."""
    deadline = time.monotonic() + KERNEL_START_TIMEOUT
    while time.monotonic() < deadline:
        msg_id, msg = new_msg("kernel_info_request", {}, session_id)
        ws.send(json.dumps(msg))
        attempt_end = min(deadline, time.monotonic() + 5)
        while time.monotonic() < attempt_end:
            try:
                m = recv_json(ws, attempt_end, "kernel_info_reply")
            except Fail:
                break
            if (m.get("msg_type") == "kernel_info_reply"
                    and m.get("parent_header", {}).get("msg_id") == msg_id):
                return m["content"]
    raise Fail(f"kernel did not answer kernel_info_request within {KERNEL_START_TIMEOUT} s")


def execute(ws, session_id, code):
    """Run code; return (stdout text, execute_result text/plain or None, reply status)."""
    msg_id, msg = new_msg(
        "execute_request",
        {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        session_id,
    )
    ws.send(json.dumps(msg))
    deadline = time.monotonic() + EXEC_TIMEOUT
    stdout, result, reply_status, idle = "", None, None, False
    while not (idle and reply_status is not None):
        m = recv_json(ws, deadline, f"the kernel to finish {code!r}")
        if m.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        t, c = m.get("msg_type"), m.get("content", {})
        if t == "stream" and c.get("name") == "stdout":
            stdout += c.get("text", "")
        elif t == "execute_result":
            result = c.get("data", {}).get("text/plain")
        elif t == "error":
            raise Fail(f"{code!r} raised {c.get('ename')}: {c.get('evalue')}")
        elif t == "execute_reply":
            reply_status = c.get("status")
        elif t == "status" and c.get("execution_state") == "idle":
            idle = True
    return stdout, result, reply_status


def run_ok(args):
    s = new_session(args)
    s.headers["Authorization"] = f"token {args.token}"

    step("GET /api/kernels with Authorization: token")
    http(s, "GET", args, "/api/kernels", 200)
    step("GET /api/kernels with Authorization: Bearer and with ?token=")
    http(s, "GET", args, "/api/kernels", 200,
         headers={"Authorization": f"Bearer {args.token}"})
    http(s, "GET", args, "/api/kernels", 200, headers={"Authorization": None},
         params={"token": args.token})

    step("POST /api/kernels")
    r = http(s, "POST", args, "/api/kernels", 201, json={"name": "python3"})
    kernel_id = r.json().get("id")
    if not kernel_id:
        raise Fail(f"POST /api/kernels returned no kernel id: {r.text[:200]!r}")
    print(f"info: kernel {kernel_id}", flush=True)
    try:
        talk_to_kernel(args, kernel_id)
    except BaseException:
        # best-effort cleanup; report the original failure
        try:
            s.delete(f"{args.url}/api/kernels/{kernel_id}", timeout=HTTP_TIMEOUT)
        except Exception:
            pass
        raise
    step("DELETE /api/kernels/ID")
    http(s, "DELETE", args, f"/api/kernels/{kernel_id}", 204)
    http(s, "GET", args, f"/api/kernels/{kernel_id}", 404)


def talk_to_kernel(args, kernel_id):
    step("open the kernel channels WebSocket")
    url = ws_url(args, f"/api/kernels/{kernel_id}/channels", args.token)
    try:
        ws = ws_connect(args, url)
    except websocket.WebSocketBadStatusException as e:
        raise Fail(f"WebSocket handshake refused with status {e.status_code}")
    except ssl.SSLError as e:
        raise Fail(f"WebSocket TLS verification failed: {e}")
    except (OSError, websocket.WebSocketException) as e:
        raise Fail(f"WebSocket connect failed: {type(e).__name__}: {e}")
    try:
        session_id = uuid.uuid4().hex
        step("wait for kernel_info_reply")
        info = wait_kernel_info(ws, session_id)
        print(f"info: kernel language {info.get('language_info', {}).get('name')}", flush=True)

        step("execute print(6*7)")
        out, _, st = execute(ws, session_id, "print(6*7)")
        if st != "ok" or out.strip() != "42":
            raise Fail(f"print(6*7): reply status {st!r}, stdout {out!r}; expected '42'")

        step("execute 1+1")
        _, res, st = execute(ws, session_id, "1+1")
        if st != "ok" or res != "2":
            raise Fail(f"1+1: reply status {st!r}, execute_result {res!r}; expected '2'")
    finally:
        try:
            ws.close(timeout=5)
        except Exception:
            pass


def check_refused_json(r, what):
    if r.status_code != 401:
        raise Fail(f"{what}: status {r.status_code}, expected 401; body: {r.text[:200]!r}")
    try:
        body = r.json()
    except ValueError:
        raise Fail(f"{what}: 401 body is not JSON: {r.text[:200]!r}")
    if not isinstance(body, dict) or "error" not in body:
        raise Fail(f"{what}: 401 JSON body has no 'error' key: {r.text[:200]!r}")


def run_expect_fail(args):
    s = new_session(args)

    def get(what, **kw):
        try:
            return s.get(args.url + "/api/kernels", timeout=HTTP_TIMEOUT, **kw)
        except requests.exceptions.RequestException as e:
            raise Fail(f"{what}: {type(e).__name__}: {e}")

    step("GET /api/kernels with a wrong token (Authorization: token)")
    check_refused_json(get("token header", headers={"Authorization": f"token {args.token}"}),
                       "GET /api/kernels, wrong token header")
    step("GET /api/kernels with a wrong token (Authorization: Bearer)")
    check_refused_json(get("bearer header", headers={"Authorization": f"Bearer {args.token}"}),
                       "GET /api/kernels, wrong bearer header")
    step("GET /api/kernels with a wrong ?token=")
    check_refused_json(get("query token", params={"token": args.token}),
                       "GET /api/kernels?token=wrong")
    step("POST /api/kernels with a wrong token")
    try:
        r = s.post(args.url + "/api/kernels", json={"name": "python3"}, timeout=HTTP_TIMEOUT,
                   headers={"Authorization": f"token {args.token}"})
    except requests.exceptions.RequestException as e:
        raise Fail(f"POST /api/kernels: {type(e).__name__}: {e}")
    check_refused_json(r, "POST /api/kernels, wrong token")

    step("WebSocket /api/kernels/x/channels with a wrong ?token=")
    url = ws_url(args, "/api/kernels/x/channels", args.token)
    try:
        ws = ws_connect(args, url)
    except websocket.WebSocketBadStatusException as e:
        if e.status_code != 401:
            raise Fail(f"WebSocket with a wrong token refused with {e.status_code}, expected 401")
        return
    except ssl.SSLError as e:
        raise Fail(f"WebSocket TLS verification failed: {e}")
    except (OSError, websocket.WebSocketException) as e:
        raise Fail(f"WebSocket with a wrong token: expected a 401 handshake answer, got "
                   f"{type(e).__name__}: {e}")
    ws.close(timeout=5)
    raise Fail("WebSocket with a wrong token was accepted")


def main():
    args = parse_args()
    return report(lambda: run_expect_fail(args) if args.expect_fail else run_ok(args))


if __name__ == "__main__":
    sys.exit(main())
