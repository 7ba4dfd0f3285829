#!/usr/bin/env python3
"""Browser end-to-end test of nbgate's sessions page: two browsers log in as the same user,
the first ends the second's session by clicking its button, and the second is logged out.

Run by the Rust integration tests with the test venv's python. See README.md.
Exit 0 and a final line "OK" on success; exit 1 with a one-line reason on stderr on failure.
"""

import os
import sys
import threading

from harness import BROWSER_ARGS, Fail, failure_shot, report, step, user_args

SESSIONS_PATH = "/_nbgate/sessions"
LOGIN_PATH = "/_nbgate/login"
ROWS = "ul.sessions > li"
OTHER_END_BUTTON = "ul.sessions > li:not(.current) form button"
ENDED_TEXT = "The session was ended."

def parse_args():
    return user_args(__doc__, 90.0)


def log_in(ctx, args, name):
    """Logs in through the form in a fresh browser context, landing on the sessions page."""
    page = ctx.new_page()
    step(f"{name}: open the sessions page (sent to log in)")
    page.goto(args.url + SESSIONS_PATH, wait_until="load")
    if not page.url.split("?")[0].endswith(LOGIN_PATH):
        raise Fail(f"{name}: the sessions page without a session did not go to login: {page.url}")
    page.fill("#username", args.user)
    page.fill("#password", args.password)
    with page.expect_navigation(wait_until="load"):
        page.click(f'form[action="{LOGIN_PATH}"] [type="submit"]')
    if not page.url.endswith(SESSIONS_PATH):
        raise Fail(f"{name}: login did not come back to the sessions page: {page.url}")
    return page


def run(args):
    from playwright.sync_api import sync_playwright

    page = None
    with sync_playwright() as p:
        step("launch chromium")
        # Playwright gives the browser a fresh temporary profile of its own.
        browser = p.chromium.launch(
            executable_path=args.chromium,
            headless=True,
            args=BROWSER_ARGS,
            timeout=60000,
        )
        try:
            # Two contexts: two cookie jars, so two sessions, like two devices.
            laptop = browser.new_context(ignore_https_errors=True, locale="en-US")
            phone = browser.new_context(ignore_https_errors=True, locale="en-US")
            laptop.set_default_timeout(30000)
            phone.set_default_timeout(30000)
            page = log_in(laptop, args, "laptop")
            other = log_in(phone, args, "phone")

            step("laptop: reload the list, two sessions")
            page.reload(wait_until="load")
            rows = page.locator(ROWS)
            if rows.count() != 2:
                raise Fail(f"expected 2 sessions listed, got {rows.count()}")
            if page.locator("ul.sessions > li.current").count() != 1:
                raise Fail("this session is not marked")
            page.screenshot(path=os.path.join(args.screenshots, "sessions.png"))

            step("laptop: end the phone's session with its button")
            with page.expect_navigation(wait_until="load"):
                page.locator(OTHER_END_BUTTON).click()
            if page.locator(ROWS).count() != 1:
                raise Fail(f"still {page.locator(ROWS).count()} sessions after ending one")
            if ENDED_TEXT not in page.inner_text("main"):
                raise Fail("no notice that the session was ended")
            page.screenshot(path=os.path.join(args.screenshots, "sessions-ended.png"))

            step("phone: its session is gone")
            other.reload(wait_until="load")
            if not other.url.split("?")[0].endswith(LOGIN_PATH):
                raise Fail(f"the ended session still opens the page: {other.url}")
        except Exception:
            failure_shot(page, args.screenshots)
            raise
        finally:
            browser.close()


def main():
    args = parse_args()
    os.makedirs(args.screenshots, exist_ok=True)

    def watchdog():
        print(f"error: hard timeout after {args.timeout:.0f} s", file=sys.stderr, flush=True)
        os._exit(1)

    dog = threading.Timer(args.timeout, watchdog)
    dog.daemon = True
    dog.start()
    try:
        return report(lambda: run(args))
    finally:
        dog.cancel()


if __name__ == "__main__":
    sys.exit(main())
