#!/usr/bin/env python3
"""Browser end-to-end test: log in through nbgate and run a notebook cell.

Run by the Rust integration tests with the test venv's python. See README.md.
Exit 0 and a final line "OK" on success; exit 1 with a one-line reason on stderr on failure.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.parse

from harness import BROWSER_ARGS, Fail, failure_shot, guarded, step

LAUNCHER_CARD = ".jp-LauncherCard"
NOTEBOOK_CARD = '.jp-LauncherCard[data-category="Notebook"][title^="Python 3"]'
NOTEBOOK_CARD_ANY = '.jp-LauncherCard[data-category="Notebook"]'
LAUNCHER_CREATE = '[data-command="launcher:create"]'
NOTEBOOK_PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
FIRST_CELL_EDITOR = NOTEBOOK_PANEL + " .jp-Cell .cm-content"
EXEC_INDICATOR = NOTEBOOK_PANEL + " .jp-Notebook-ExecutionIndicator"
KERNEL_NAME = NOTEBOOK_PANEL + ' [data-jp-item-name="kernelName"]'
OUTPUT = NOTEBOOK_PANEL + " .jp-OutputArea-output"
DIALOG_ACCEPT = ".jp-Dialog .jp-Dialog-button.jp-mod-accept"
TOAST_CLOSE = ".jp-Notification-Toast-Close"
CURRENT_TAB_LABEL = "#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel"

LOGIN_PATH = "/_nbgate/login"
SESSION_COOKIE = "__Host-nbgate-session"
WRONG_LOGIN_TEXT = "Wrong user name or password."

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True, help="base URL, e.g. https://localhost:8443")
    ap.add_argument("--user", help="nbgate user name (password from $NBGATE_TEST_PASSWORD)")
    ap.add_argument("--screenshots", required=True, help="directory for PNG screenshots")
    ap.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    ap.add_argument("--timeout", type=float, default=120.0, help="overall time budget, seconds")
    ap.add_argument(
        "--protocol",
        choices=["h2", "http/1.1"],
        default="h2",
        help="the HTTP version Chromium must load JupyterLab with (http/1.1: HTTP/2 disabled)",
    )
    ap.add_argument(
        "--skip-login",
        action="store_true",
        help="development only: skip steps 1-3 and open URL/lab?token=$NBGATE_TEST_TOKEN "
        "(e.g. a plain jupyter lab)",
    )
    args = ap.parse_args()
    args.url = args.url.rstrip("/")
    if args.skip_login:
        args.token = os.environ.get("NBGATE_TEST_TOKEN", "")
        if not args.token:
            ap.error("--skip-login needs NBGATE_TEST_TOKEN in the environment")
    else:
        if not args.user:
            ap.error("--user is required")
        args.password = os.environ.get("NBGATE_TEST_PASSWORD", "")
        if not args.password:
            ap.error("NBGATE_TEST_PASSWORD must be set in the environment")
    return args


class Budget:
    """Overall deadline; every single wait is capped at 60 s and at the time left."""

    def __init__(self, seconds):
        self.deadline = time.monotonic() + seconds

    def left(self):
        return self.deadline - time.monotonic()

    def ms(self, cap=60.0):
        left = self.left()
        if left <= 0:
            raise Fail("overall --timeout exhausted")
        return int(min(cap, left) * 1000)


def shot(page, outdir, name):
    path = os.path.join(outdir, name)
    page.screenshot(path=path, full_page=False, timeout=15000)
    print(f"screenshot: {path}", flush=True)


def path_of(url):
    return urllib.parse.urlsplit(url).path


def dismiss_popups(page):
    """Accept JupyterLab dialogs (e.g. "Select Kernel": default choice) and hide toasts."""
    try:
        btn = page.locator(DIALOG_ACCEPT)
        if btn.count() > 0 and btn.first.is_visible():
            title = page.locator(".jp-Dialog-header").first.inner_text(timeout=2000)
            print(f"info: accepting dialog {title.strip()!r}", flush=True)
            btn.first.click(timeout=5000)
        toasts = page.locator(TOAST_CLOSE)
        for i in range(toasts.count()):
            if toasts.nth(i).is_visible():
                # the toast may still be sliding in (outside the viewport): send the click
                # event directly instead of a pointer click
                toasts.nth(i).dispatch_event("click", timeout=2000)
                print("info: hid a notification toast", flush=True)
    except Exception as e:  # popups are best effort; the real waits report failures
        print(f"info: ignoring popup handling error: {str(e).splitlines()[0]}", flush=True)


def submit_login(page, budget, user, password):
    page.fill("#username", user, timeout=budget.ms())
    page.fill("#password", password, timeout=budget.ms())
    with page.expect_navigation(timeout=budget.ms()) as nav:
        page.click('form[action="/_nbgate/login"] [type="submit"], '
                   'form[action="/_nbgate/login"] button', timeout=budget.ms())
    return nav.value


def first_hop_status(response):
    """Status of the first response in the redirect chain that ended at `response`
    (the 303 of GET /lab or of the login POST), or None if there was no redirect."""
    if response is None:
        return None
    req = response.request
    if req.redirected_from is None:
        return None
    while req.redirected_from is not None:
        req = req.redirected_from
    first = req.response()
    return first.status if first is not None else None


def do_login(page, args, budget):
    step(f"open {args.url}/lab without a session")
    resp = page.goto(args.url + "/lab", timeout=budget.ms(), wait_until="load")
    if path_of(page.url) != LOGIN_PATH or "next=" not in page.url:
        raise Fail(f"/lab did not redirect to {LOGIN_PATH}?next=...; landed on {page.url}")
    st = first_hop_status(resp)
    if st != 303:
        raise Fail(f"redirect to the login page had status {st}, expected 303")
    nxt = urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query).get("next", [""])[0]
    if nxt != "/lab":
        raise Fail(f"login redirect has next={nxt!r}, expected '/lab'")
    for sel in ('form[method="post" i][action="/_nbgate/login"]', "#username",
                'input[name="password"][type="password"]#password',
                'input[type="hidden"][name="csrf"]', 'input[type="hidden"][name="next"]'):
        if page.locator(sel).count() != 1:
            raise Fail(f"login page: expected exactly one element matching {sel}")
    page.get_by_role("button", name="Log in").wait_for(state="visible", timeout=budget.ms())
    shot(page, args.screenshots, "login.png")

    step("submit a wrong password")
    submit_login(page, budget, args.user, args.password + "-wrong")
    alert = page.locator('[role="alert"]', has_text=WRONG_LOGIN_TEXT)
    try:
        alert.first.wait_for(state="visible", timeout=budget.ms())
    except Exception:
        raise Fail(f"no visible role=alert with {WRONG_LOGIN_TEXT!r} after a wrong password; "
                   f"page is {page.url}")
    if path_of(page.url) != LOGIN_PATH:
        raise Fail(f"wrong password left the login page: {page.url}")
    if any(c["name"] == SESSION_COOKIE for c in page.context.cookies()):
        raise Fail("a session cookie was set after a wrong password")
    shot(page, args.screenshots, "login-error.png")

    step("submit the right password")
    resp = submit_login(page, budget, args.user, args.password)
    if path_of(page.url) == LOGIN_PATH:
        raise Fail("login with the right password stayed on the login page")
    st = first_hop_status(resp)
    if st != 303:
        raise Fail(f"successful login answered {st}, expected a 303 redirect")
    cookies = [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    if not cookies:
        raise Fail(f"no {SESSION_COOKIE} cookie after login")
    c = cookies[0]
    if not (c.get("secure") and c.get("httpOnly")):
        raise Fail(f"{SESSION_COOKIE} cookie is not Secure+HttpOnly: {json.dumps(c)}")
    if args.password in page.url:
        raise Fail("password appears in the page URL")


def open_launcher(page, budget):
    # A restored workspace may have no launcher open; then open one with the "+" button.
    page.wait_for_selector(f"{LAUNCHER_CARD}, {LAUNCHER_CREATE}", timeout=budget.ms())
    try:
        page.wait_for_selector(NOTEBOOK_CARD_ANY, timeout=min(budget.ms(), 10000))
    except Exception:
        print("info: no launcher shown, opening one", flush=True)
        dismiss_popups(page)
        page.locator(LAUNCHER_CREATE).first.click(timeout=budget.ms())
        page.wait_for_selector(NOTEBOOK_CARD_ANY, timeout=budget.ms())


def kernel_ready(page):
    """True when this notebook's kernel is connected (server sees a websocket) and idle."""
    ind = page.locator(EXEC_INDICATOR)
    if ind.count() == 0 or ind.first.get_attribute("data-status") != "idle":
        return False
    name = page.locator(KERNEL_NAME)
    if name.count() == 0 or "Python" not in name.first.inner_text():
        return False
    tab = page.locator(CURRENT_TAB_LABEL)
    nb_name = tab.first.inner_text().strip() if tab.count() else ""
    sessions = page.evaluate(
        """async () => {
            const r = await fetch('/api/sessions', {credentials: 'same-origin'});
            return r.ok ? await r.json() : null;
        }"""
    )
    for s in sessions or []:
        k = s.get("kernel") or {}
        if (nb_name and s.get("path", "").split("/")[-1] == nb_name
                and k.get("execution_state") == "idle" and k.get("connections", 0) >= 1):
            return True
    return False


def wait_until(page, budget, what, pred, cap=60.0):
    end = time.monotonic() + min(cap, max(budget.left(), 0))
    while time.monotonic() < end:
        dismiss_popups(page)
        try:
            if pred():
                return
        except Exception as e:
            print(f"info: while waiting for {what}: {str(e).splitlines()[0]}", flush=True)
        page.wait_for_timeout(500)
    raise Fail(f"timed out waiting for {what}")


def run_notebook(page, args, budget):
    step("wait for the JupyterLab launcher")
    open_launcher(page, budget)
    if not path_of(page.url).startswith("/lab"):
        raise Fail(f"JupyterLab is not under /lab: {page.url}")
    dismiss_popups(page)
    proto = page.evaluate(
        "() => performance.getEntriesByType('navigation')[0].nextHopProtocol"
    )
    print(f"info: JupyterLab loaded over {proto}", flush=True)
    if proto != args.protocol:
        raise Fail(f"JupyterLab loaded over {proto!r}, expected {args.protocol!r}")

    step("create a Python 3 notebook")
    card = page.locator(NOTEBOOK_CARD)
    if card.count() == 0:
        card = page.locator(NOTEBOOK_CARD_ANY)
    card.first.click(timeout=budget.ms())
    page.wait_for_selector(FIRST_CELL_EDITOR, timeout=budget.ms())

    step("wait for the kernel to be idle")
    wait_until(page, budget, "the notebook kernel to be connected and idle",
               lambda: kernel_ready(page))

    step("run print(6*7)")
    editor = page.locator(FIRST_CELL_EDITOR).first
    editor.click(timeout=budget.ms())
    page.keyboard.type("print(6*7)")
    typed = editor.inner_text(timeout=budget.ms())
    if "print(6*7)" not in typed:
        raise Fail(f"cell editor holds {typed!r} after typing")
    page.keyboard.press("Shift+Enter")

    step("wait for output 42")
    out = page.locator(OUTPUT).filter(has_text="42").first
    try:
        out.wait_for(state="visible", timeout=budget.ms())
    except Exception:
        texts = page.locator(OUTPUT).all_inner_texts()
        raise Fail(f"no cell output '42' appeared (outputs: {texts!r})")
    got = out.inner_text().strip()
    if got != "42":
        raise Fail(f"cell output is {got!r}, expected '42'")
    shot(page, args.screenshots, "notebook.png")


def run(args, budget):
    from playwright.sync_api import sync_playwright

    page = None
    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="nbgate-chromium-") as prof:
        step("launch chromium")
        browser_args = BROWSER_ARGS + (["--disable-http2"] if args.protocol != "h2" else [])
        ctx = p.chromium.launch_persistent_context(
            prof,
            executable_path=args.chromium,
            headless=True,
            args=browser_args,
            ignore_https_errors=True,
            viewport={"width": 1280, "height": 900},
            locale="en-US",  # the login page is localized from Accept-Language
            timeout=60000,
        )
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.on("pageerror", lambda e: print(f"browser-pageerror: {e}", flush=True))
            if args.skip_login:
                step("open JupyterLab directly with a token (--skip-login)")
                q = urllib.parse.urlencode({"token": args.token})
                page.goto(f"{args.url}/lab?reset&{q}", timeout=budget.ms())
            else:
                do_login(page, args, budget)
            run_notebook(page, args, budget)
        except Exception:
            failure_shot(page, args.screenshots)
            raise
        finally:
            ctx.close()


def main():
    args = parse_args()
    os.makedirs(args.screenshots, exist_ok=True)
    budget = Budget(args.timeout)

    return guarded(args.timeout, lambda: run(args, budget))

if __name__ == "__main__":
    sys.exit(main())
