#!/usr/bin/env python3
"""Browser end-to-end test of nbgate's TOTP second factor on a phone-sized screen: log in with
the password, turn TOTP on from the account page (scan = read the key shown beside the QR code,
confirm a first code), keep the recovery codes, log out, log in again with the password and a
code, and check that the login page, the second step and the account page fit the screen (no
horizontal scrolling).

Codes are computed here with hmac/hashlib (RFC 6238), independently of nbgate.
Run by the Rust integration tests with the test venv's python. See README.md.
Exit 0 and a final line "OK" on success; exit 1 with a one-line reason on stderr on failure.
"""

import argparse
import base64
import hashlib
import hmac
import os
import struct
import sys
import time

from harness import BROWSER_ARGS, Fail, failure_shot, main_of, step

ACCOUNT_PATH = "/_nbgate/account"
LOGIN_PATH = "/_nbgate/login"
TOTP_PATH = "/_nbgate/login/totp"
LOGOUT_PATH = "/_nbgate/logout"
# A common phone: 390 x 844 CSS pixels.
PHONE = {"width": 390, "height": 844}


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True, help="base URL, e.g. https://localhost:8443")
    ap.add_argument("--user", required=True, help="nbgate user (password: $NBGATE_TEST_PASSWORD)")
    ap.add_argument("--screenshots", required=True, help="directory for PNG screenshots")
    ap.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    ap.add_argument("--timeout", type=float, default=90.0, help="overall time budget, seconds")
    args = ap.parse_args()
    args.url = args.url.rstrip("/")
    args.password = os.environ.get("NBGATE_TEST_PASSWORD", "")
    if not args.password:
        ap.error("NBGATE_TEST_PASSWORD must be set")
    return args


def totp(key_b32, t):
    """The RFC 6238 code (HMAC-SHA-1, 6 digits, 30 s steps) of a base32 key at unix time t."""
    clean = key_b32.replace(" ", "").upper()
    key = base64.b32decode(clean + "=" * (-len(clean) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(t) // 30), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[off : off + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def settled_time():
    """Now, at least 4 s before the next step, so the code typed is checked in its own step."""
    while 30 - time.time() % 30 < 4:
        time.sleep(0.5)
    return time.time()


def fits(page, name):
    """Fails if the page scrolls sideways on the phone's width."""
    wide = page.evaluate("document.documentElement.scrollWidth")
    if wide > PHONE["width"]:
        raise Fail(f"{name}: {wide} px wide on a {PHONE['width']} px screen (horizontal scroll)")


def shot(page, args, name):
    page.screenshot(path=os.path.join(args.screenshots, name), full_page=True)


def run(args):
    from playwright.sync_api import sync_playwright

    page = None
    with sync_playwright() as p:
        step("launch chromium")
        browser = p.chromium.launch(
            executable_path=args.chromium,
            headless=True,
            args=BROWSER_ARGS,
            timeout=60000,
        )
        try:
            phone = browser.new_context(
                ignore_https_errors=True,
                locale="en-US",
                viewport=PHONE,
                is_mobile=True,
                has_touch=True,
                device_scale_factor=2,
            )
            phone.set_default_timeout(30000)
            page = phone.new_page()

            step("open the account page: sent to log in")
            page.goto(args.url + ACCOUNT_PATH, wait_until="load")
            if not page.url.split("?")[0].endswith(LOGIN_PATH):
                raise Fail(f"the account page without a session did not go to login: {page.url}")
            fits(page, "login page")
            page.fill("#username", args.user)
            page.fill("#password", args.password)
            with page.expect_navigation(wait_until="load"):
                page.click(f'form[action="{LOGIN_PATH}"] [type="submit"]')
            if not page.url.endswith(ACCOUNT_PATH):
                raise Fail(f"the password alone did not reach the account page: {page.url}")

            step("account page: turn TOTP on")
            if page.locator("svg.qr").count() != 1:
                raise Fail("no QR code on the account page")
            fits(page, "account page")
            shot(page, args, "account.png")
            key = page.locator("#totp code").inner_text()
            now = settled_time()
            enrol_step = int(now) // 30
            page.fill("#password-enrol", args.password)
            page.fill("#code-enrol", totp(key, now))
            with page.expect_navigation(wait_until="load"):
                page.locator('form:has(input[name="action"][value="enrol"]) button').click()
            codes = page.locator("ul.recovery-codes li")
            if codes.count() != 10:
                raise Fail(f"expected 10 recovery codes, got {codes.count()}")
            fits(page, "recovery codes")
            shot(page, args, "recovery-codes.png")
            with page.expect_navigation(wait_until="load"):
                page.click("a.button")
            if "Recovery codes left" not in page.inner_text("main"):
                raise Fail("the account page does not say TOTP is on")

            step("log out")
            page.goto(args.url + LOGOUT_PATH, wait_until="load")
            with page.expect_navigation(wait_until="load"):
                page.click('form.logout [type="submit"]')

            step("log in again: password, then the code")
            page.goto(args.url + ACCOUNT_PATH, wait_until="load")
            page.fill("#username", args.user)
            page.fill("#password", args.password)
            with page.expect_navigation(wait_until="load"):
                page.click(f'form[action="{LOGIN_PATH}"] [type="submit"]')
            if not page.url.endswith(TOTP_PATH):
                raise Fail(f"the password did not lead to the second step: {page.url}")
            fits(page, "second step")
            shot(page, args, "second-step.png")
            now = settled_time()
            # The enrolment used its step's code: take the next step's (within the skew).
            t = now + 30 if int(now) // 30 <= enrol_step else now
            page.fill("#code", totp(key, t))
            with page.expect_navigation(wait_until="load"):
                page.click(f'form[action="{TOTP_PATH}"] [type="submit"]')
            if not page.url.endswith(ACCOUNT_PATH):
                raise Fail(f"the code did not complete the login: {page.url}")
            if "Recovery codes left" not in page.inner_text("main"):
                raise Fail("logged in, but the account page does not show TOTP on")
            shot(page, args, "logged-in.png")
        except Exception:
            failure_shot(page, args.screenshots)
            raise
        finally:
            browser.close()


def main():
    return main_of(parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
