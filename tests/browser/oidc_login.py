#!/usr/bin/env python3
"""Browser end-to-end test of single sign-on: Chromium opens JupyterLab through nbgate, is sent
to the login page, clicks "Sign in with <provider>", signs in at the real OpenID provider
(tests/oidc/provider.mjs) and lands in JupyterLab; the login page also fits a phone's screen.

Run by tests/browser.rs with the test venv's python. See README.md.
Exit 0 and a final line "OK" on success; exit 1 with a one-line reason on stderr on failure.
"""

import argparse
import os
import sys

from harness import BROWSER_ARGS, Fail, failure_shot, main_of, step

LOGIN_PATH = "/_nbgate/login"
LAUNCHER_CARD = ".jp-LauncherCard"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True, help="base URL, e.g. https://localhost:8443")
    ap.add_argument("--provider", required=True, help="the button's text, e.g. 'Test IdP test'")
    ap.add_argument("--account", required=True, help="the account to sign in as at the provider")
    ap.add_argument("--user", help="ignored (the runner passes the password user)")
    ap.add_argument("--screenshots", required=True, help="directory for PNG screenshots")
    ap.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    ap.add_argument("--timeout", type=float, default=120.0, help="overall time budget, seconds")
    args = ap.parse_args()
    args.url = args.url.rstrip("/")
    return args


def phone_fits(browser, args):
    """The login page at a phone's size: the button visible, nothing wider than the screen."""
    step("phone: the login page fits")
    ctx = browser.new_context(
        ignore_https_errors=True,
        locale="zh-CN",
        viewport={"width": 360, "height": 740},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    try:
        page = ctx.new_page()
        page.goto(args.url + LOGIN_PATH, wait_until="load")
        button = page.get_by_role("link", name=f"使用 {args.provider} 登录")
        if not button.is_visible():
            raise Fail("no Chinese sign-in button on the phone")
        box = button.bounding_box()
        if box is None or box["x"] < 0 or box["x"] + box["width"] > 360 or box["height"] < 44:
            raise Fail(f"the button does not fit a phone: {box}")
        wide = page.evaluate("document.documentElement.scrollWidth")
        if wide > 360:
            raise Fail(f"the login page is {wide}px wide on a 360px screen")
        page.screenshot(path=os.path.join(args.screenshots, "sso-login-phone.png"))
    finally:
        ctx.close()


def run(args):
    from playwright.sync_api import sync_playwright

    page = None
    with sync_playwright() as p:
        step("launch chromium")
        browser = p.chromium.launch(
            executable_path=args.chromium, headless=True, args=BROWSER_ARGS, timeout=60000
        )
        try:
            ctx = browser.new_context(ignore_https_errors=True, locale="en-US")
            ctx.set_default_timeout(30000)
            page = ctx.new_page()
            step("open JupyterLab: sent to the login page")
            page.goto(args.url + "/lab", wait_until="load")
            if not page.url.split("?")[0].endswith(LOGIN_PATH):
                raise Fail(f"not sent to the login page: {page.url}")
            button = page.get_by_role("link", name=f"Sign in with {args.provider}")
            if not button.is_visible():
                raise Fail("no 'Sign in with' button")
            page.screenshot(path=os.path.join(args.screenshots, "sso-login.png"))

            step("click the button: the provider's sign-in form")
            with page.expect_navigation(wait_until="load"):
                button.click()
            if "/interaction/" not in page.url:
                raise Fail(f"not at the provider's sign-in: {page.url}")
            page.fill("#login", args.account)
            page.screenshot(path=os.path.join(args.screenshots, "sso-provider.png"))

            step("sign in at the provider: back through nbgate to JupyterLab")
            page.click("#sign-in")
            page.wait_for_url(args.url + "/lab**", timeout=60000)
            page.wait_for_selector(LAUNCHER_CARD, timeout=60000)
            page.screenshot(path=os.path.join(args.screenshots, "sso-lab.png"))
            cookies = {c["name"]: c for c in ctx.cookies(args.url)}
            if "__Host-nbgate-session" not in cookies:
                raise Fail("no session cookie after the sign-in")
            if "__Host-nbgate-oidc" in cookies:
                raise Fail("the flow cookie outlived the sign-in")

            phone_fits(browser, args)
        except Exception:
            failure_shot(page, args.screenshots)
            raise
        finally:
            browser.close()


def main():
    return main_of(parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
