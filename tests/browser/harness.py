"""What the end-to-end scripts here share: progress lines, the failure type, Chromium's flags.

Imported by the scripts in this directory (Python puts a script's own directory first on
`sys.path`). Output contract (README.md): `step: ...` progress lines on stdout; on failure one
`error: <reason>` line on stderr.
"""

import argparse
import os
import sys
import threading
import time


class Fail(Exception):
    """A check failed: its message is the one-line reason printed."""


_T0 = time.monotonic()


def step(msg):
    print(f"step: {msg} [t={time.monotonic() - _T0:.1f}s]", flush=True)


# Headless Chromium as TESTING.md says it runs here: no sandbox (root), no GPU, nothing fetched
# in the background, no QUIC (nbgate speaks TCP only).
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def user_args(description, timeout):
    """The arguments of a script that logs in as a user through the form: `--url`, `--user`,
    `--screenshots`, `--chromium`, `--timeout` (default `timeout` s); the password from
    `$NBGATE_TEST_PASSWORD` as `args.password`, `args.url` without a trailing slash."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--url", required=True, help="base URL, e.g. https://localhost:8443")
    ap.add_argument("--user", required=True, help="nbgate user (password: $NBGATE_TEST_PASSWORD)")
    ap.add_argument("--screenshots", required=True, help="directory for PNG screenshots")
    ap.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    ap.add_argument("--timeout", type=float, default=timeout, help="overall time budget, seconds")
    args = ap.parse_args()
    args.url = args.url.rstrip("/")
    args.password = os.environ.get("NBGATE_TEST_PASSWORD", "")
    if not args.password:
        ap.error("NBGATE_TEST_PASSWORD must be set")
    return args


def report(body):
    """Runs `body()` and returns the exit code: 0 after printing `OK`, or 1 after printing
    one `error:` line (a `Fail`'s reason, Playwright's first line, or any other exception's)."""
    try:
        body()
    except Fail as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except Exception as e:  # noqa: BLE001 - every failure becomes the one error line
        first = str(e).splitlines()[0] if str(e) else ""
        if type(e).__module__.startswith("playwright"):
            print(f"error: playwright: {first}", file=sys.stderr, flush=True)
        else:
            print(f"error: {type(e).__name__}: {first}", file=sys.stderr, flush=True)
        return 1
    print("OK", flush=True)
    return 0


def guarded(timeout, body):
    """`report(body)` under a last-resort watchdog: if something blocks outside Playwright's own
    timeouts, the script still ends (one `error:` line, exit 1) `timeout + 60` s after."""

    def watchdog():
        print(f"error: hard timeout after {timeout + 60:.0f} s", file=sys.stderr, flush=True)
        os._exit(1)

    dog = threading.Timer(timeout + 60, watchdog)
    dog.daemon = True
    dog.start()
    try:
        return report(body)
    finally:
        dog.cancel()


def failure_shot(page, screenshots):
    """While a failure propagates: `failure.png` of `page` (if one was open) and its URL, best
    effort (the page may be the thing that broke)."""
    if page is None:
        return
    try:
        page.screenshot(path=os.path.join(screenshots, "failure.png"))
        print(f"info: page at failure: {page.url}", flush=True)
    except Exception:  # noqa: BLE001 - the original failure is the one reported
        pass


def main_of(parse_args, run):
    """A script's `main`: its arguments, the screenshot directory made, `run(args)` under
    `guarded`; returns the exit code."""
    args = parse_args()
    os.makedirs(args.screenshots, exist_ok=True)
    return guarded(args.timeout, lambda: run(args))
