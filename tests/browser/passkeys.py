#!/usr/bin/env python3
"""Browser end-to-end test of nbgate's passkeys (issue 22 §2), in Chromium with a virtual
authenticator from the DevTools protocol (`WebAuthn.addVirtualAuthenticator`: a platform
authenticator that keeps resident keys and verifies the user).

Logs in with the password, registers a passkey on the passkeys page, logs out, logs in with
the passkey (landing in JupyterLab), removes the passkey, and a login with it is refused with
the page's message; then, with JavaScript disabled, the login page shows no passkey button
and the password form still logs in.

Run by tests/passkeys.rs with the test venv's python. See README.md.
Exit 0 and a final line "OK" on success; exit 1 with a one-line reason on stderr on failure.
"""

import os
import sys

from harness import BROWSER_ARGS, Fail, failure_shot, main_of, step, user_args

PASSKEYS_PATH = "/_nbgate/passkeys"
LOGIN_PATH = "/_nbgate/login"
LOGOUT_PATH = "/_nbgate/logout"
PASSKEY_BUTTON = "#nbgate-passkey button"
NOTE = "#nbgate-passkey-note"
ROWS = "ul.passkeys > li"
LAUNCHER_CARD = ".jp-LauncherCard"
KEY_NAME = "Test laptop"


def parse_args():
    return user_args(__doc__, 120.0)


def path_of(url):
    rest = url.split("://", 1)[-1]
    return "/" + rest.split("/", 1)[1].split("?")[0] if "/" in rest else "/"


def shot(page, args, name):
    page.screenshot(path=os.path.join(args.screenshots, name), full_page=True)


def password_login(page, args, start):
    """Opens `start` without a session, is sent to log in, logs in with the password."""
    page.goto(args.url + start, wait_until="load")
    if path_of(page.url) != LOGIN_PATH:
        raise Fail(f"{start} without a session did not go to the login page: {page.url}")
    page.fill("#username", args.user)
    page.fill("#password", args.password)
    with page.expect_navigation(wait_until="load"):
        page.click(f'form[action="{LOGIN_PATH}"] [type="submit"]')
    if path_of(page.url) != start:
        raise Fail(f"password login did not come back to {start}: {page.url}")


def log_out(page, args):
    page.goto(args.url + LOGOUT_PATH, wait_until="load")
    with page.expect_navigation(wait_until="load"):
        page.click(f'form[action="{LOGOUT_PATH}"] [type="submit"]')
    page.goto(args.url + PASSKEYS_PATH, wait_until="load")
    if path_of(page.url) != LOGIN_PATH:
        raise Fail(f"still logged in after logout: {page.url}")


def run(args):
    from playwright.sync_api import sync_playwright

    page = None
    with sync_playwright() as p:
        step("launch chromium")
        # --ignore-certificate-errors: Chromium refuses WebAuthn on a page whose certificate
        # it does not trust unless told to ignore certificate errors (Playwright's own
        # ignore_https_errors does not reach that check). The test certificate is self-signed.
        browser = p.chromium.launch(
            executable_path=args.chromium,
            headless=True,
            args=BROWSER_ARGS + ["--ignore-certificate-errors"],
            timeout=60000,
        )
        try:
            ctx = browser.new_context(ignore_https_errors=True, locale="en-US")
            ctx.set_default_timeout(30000)
            page = ctx.new_page()
            step("add a virtual authenticator (resident keys, user verification)")
            cdp = ctx.new_cdp_session(page)
            cdp.send("WebAuthn.enable", {"enableUI": False})
            added = cdp.send(
                "WebAuthn.addVirtualAuthenticator",
                {
                    "options": {
                        "protocol": "ctap2",
                        "transport": "internal",
                        "hasResidentKey": True,
                        "hasUserVerification": True,
                        "isUserVerified": True,
                        "automaticPresenceSimulation": True,
                    }
                },
            )
            authenticator = added["authenticatorId"]

            step("log in with the password, to the passkeys page")
            password_login(page, args, PASSKEYS_PATH)
            if page.locator(ROWS).count() != 0:
                raise Fail("a fresh user already lists passkeys")
            if not page.locator("#nbgate-passkey form").is_visible():
                raise Fail("the add form is not shown with JavaScript on")
            if page.locator("#nbgate-passkey-nojs").is_visible():
                raise Fail("the 'needs JavaScript' notice is still shown with JavaScript on")
            shot(page, args, "passkeys-empty.png")

            step("register a passkey")
            page.fill("#passkey-name", KEY_NAME)
            with page.expect_navigation(wait_until="load"):
                page.click("#nbgate-passkey form [type=submit]")
            if "added=1" not in page.url:
                raise Fail(f"registration did not come back with its notice: {page.url}: "
                           f"{page.inner_text('main')}")
            if page.locator(ROWS).count() != 1 or KEY_NAME not in page.inner_text(ROWS):
                raise Fail(f"the new passkey is not listed: {page.inner_text('main')}")
            creds = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
            held = creds["credentials"]
            if len(held) != 1 or not held[0]["isResidentCredential"]:
                raise Fail(f"the authenticator does not hold one discoverable passkey: {held}")
            if held[0]["rpId"] != "localhost":
                raise Fail(f"the passkey is for {held[0]['rpId']!r}, not localhost")
            shot(page, args, "passkeys-added.png")

            step("log out")
            log_out(page, args)

            step("log in with the passkey, landing in JupyterLab")
            page.goto(args.url + "/lab", wait_until="load")
            if path_of(page.url) != LOGIN_PATH:
                raise Fail(f"/lab without a session did not go to the login page: {page.url}")
            button = page.locator(PASSKEY_BUTTON)
            if not button.is_visible():
                raise Fail("no visible 'Sign in with a passkey' button with JavaScript on")
            if button.inner_text().strip() != "Sign in with a passkey":
                raise Fail(f"the button says {button.inner_text()!r}")
            shot(page, args, "login-with-passkey-button.png")
            with page.expect_navigation(wait_until="load"):
                button.click()
            if path_of(page.url) != "/lab":
                raise Fail(f"the passkey login did not go on to /lab: {page.url}")
            page.wait_for_selector(LAUNCHER_CARD, timeout=60000)
            shot(page, args, "lab-after-passkey.png")

            step("the passkeys page shows when it was last used")
            page.goto(args.url + PASSKEYS_PATH, wait_until="load")
            if "Last used never" in page.inner_text(ROWS):
                raise Fail("the login did not record the passkey's last use")

            step("remove the passkey")
            with page.expect_navigation(wait_until="load"):
                page.click(f"{ROWS} form [type=submit]")
            if "removed=1" not in page.url or page.locator(ROWS).count() != 0:
                raise Fail(f"the passkey was not removed: {page.url}: {page.inner_text('main')}")
            if "The passkey was removed." not in page.inner_text("main"):
                raise Fail("no notice that the passkey was removed")
            shot(page, args, "passkeys-removed.png")

            step("log out; the removed passkey is refused (on a phone-sized screen)")
            page.set_viewport_size({"width": 390, "height": 844})
            log_out(page, args)
            wide = page.evaluate("document.documentElement.scrollWidth")
            if wide > 390:
                raise Fail(f"the login page is {wide} px wide on a 390 px screen")
            page.click(PASSKEY_BUTTON)
            note = page.locator(NOTE)
            note.wait_for(state="visible", timeout=30000)
            said = note.inner_text()
            if "not registered" not in said:
                raise Fail(f"the refusal says {said!r}")
            if path_of(page.url) != LOGIN_PATH:
                raise Fail(f"the removed passkey left the login page: {page.url}")
            shot(page, args, "removed-passkey-refused.png")
            ctx.close()

            step("without JavaScript: no passkey button, the password form works")
            plain = browser.new_context(
                ignore_https_errors=True, locale="en-US", java_script_enabled=False
            )
            plain.set_default_timeout(30000)
            page = plain.new_page()
            page.goto(args.url + LOGIN_PATH + "?next=%2F_nbgate%2Fpasskeys", wait_until="load")
            if page.locator(PASSKEY_BUTTON).is_visible():
                raise Fail("the passkey button shows without JavaScript")
            shot(page, args, "login-without-js.png")
            page.fill("#username", args.user)
            page.fill("#password", args.password)
            with page.expect_navigation(wait_until="load"):
                page.click(f'form[action="{LOGIN_PATH}"] [type="submit"]')
            if path_of(page.url) != PASSKEYS_PATH:
                raise Fail(f"the password login without JavaScript failed: {page.url}")
            if not page.locator("#nbgate-passkey-nojs").is_visible():
                raise Fail("the passkeys page does not say adding one needs JavaScript")
            plain.close()
        except Exception:
            failure_shot(page, args.screenshots)
            raise
        finally:
            browser.close()


def main():
    return main_of(parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
