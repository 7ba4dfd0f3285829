#!/usr/bin/env python3
"""Browser end-to-end test: two users collaborate in one notebook and see each other by name.

Run by tests/identity.rs with the test venv's python. See README.md.
Exit 0 and a final line "OK" on success; exit 1 with a one-line reason on stderr on failure.
"""

import argparse
import os
import sys
import urllib.parse

from harness import BROWSER_ARGS, Fail, guarded, step
from login_notebook import LOGIN_PATH, Budget, dismiss_popups

NOTEBOOK_PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
FIRST_CELL = NOTEBOOK_PANEL + " .jp-Cell"
# jupyter-collaboration's side panel ("Collaboration"): one entry per other connected user,
# its header's text span holding the user's display name, its icon the initials.
PANEL_TAB = '.jp-SideBar .lm-TabBar-tab[data-id="jp-collaboration-panel"]'
COLLABORATOR_NAMES = ".jp-CollaboratorsList .jp-Collaborator .jp-CollaboratorHeader > span"
COLLABORATOR_INITIALS = ".jp-CollaboratorsList .jp-Collaborator .jp-CollaboratorIcon span"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True, help="base URL, e.g. https://localhost:8443")
    ap.add_argument("--users", required=True, help="two nbgate users, comma separated "
                    "(one password for both, from $NBGATE_TEST_PASSWORD)")
    ap.add_argument("--notebook", required=True, help="notebook path both open")
    ap.add_argument("--screenshots", required=True, help="directory for PNG screenshots")
    ap.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    ap.add_argument("--timeout", type=float, default=150.0, help="overall time budget, seconds")
    args = ap.parse_args()
    args.url = args.url.rstrip("/")
    args.users = args.users.split(",")
    if len(args.users) != 2:
        ap.error("--users needs exactly two names")
    args.password = os.environ.get("NBGATE_TEST_PASSWORD", "")
    if not args.password:
        ap.error("NBGATE_TEST_PASSWORD must be set in the environment")
    return args


def open_notebook(page, args, user, budget):
    step(f"{user}: log in and open {args.notebook}")
    target = "/lab/tree/" + urllib.parse.quote(args.notebook)
    page.goto(f"{args.url}{LOGIN_PATH}?next={urllib.parse.quote(target, safe='')}",
              timeout=budget.ms())
    page.fill("#username", user, timeout=budget.ms())
    page.fill("#password", args.password, timeout=budget.ms())
    with page.expect_navigation(timeout=budget.ms()):
        page.get_by_role("button", name="Log in").click(timeout=budget.ms())
    page.wait_for_selector(FIRST_CELL, timeout=budget.ms())
    me = page.evaluate(
        """async () => {
            const r = await fetch('/api/me', {credentials: 'same-origin'});
            return r.ok ? (await r.json()).identity : null;
        }"""
    )
    if not me or me.get("username") != user:
        raise Fail(f"{user}: Jupyter's /api/me names {me!r}")
    print(f"info: {user}: Jupyter knows {me['username']!r} ({me.get('initials')!r}, "
          f"{me.get('color')!r})", flush=True)


def sees(page, args, user, other, budget):
    step(f"{user}: wait for {other} in the collaborators list")
    dismiss_popups(page)
    page.locator(PANEL_TAB).first.click(timeout=budget.ms())
    name = page.locator(COLLABORATOR_NAMES).filter(has_text=other)
    try:
        name.first.wait_for(state="visible", timeout=budget.ms())
    except Exception:
        names = page.locator(COLLABORATOR_NAMES).all_inner_texts()
        raise Fail(f"{user} does not see {other} among the collaborators (sees {names!r})")
    names = [n.strip() for n in page.locator(COLLABORATOR_NAMES).all_inner_texts()]
    if any(n.startswith("Anonymous") for n in names):
        raise Fail(f"{user} sees anonymous collaborators: {names!r}")
    initials = page.locator(COLLABORATOR_INITIALS).all_inner_texts()
    print(f"info: {user} sees {names!r} with initials {initials!r}", flush=True)
    page.screenshot(path=os.path.join(args.screenshots, f"{user}.png"), timeout=15000)


def main():
    args = parse_args()
    os.makedirs(args.screenshots, exist_ok=True)
    budget = Budget(args.timeout)

    def body():
        from playwright.sync_api import sync_playwright

        pages = []
        with sync_playwright() as p:
            step("launch chromium")
            browser = p.chromium.launch(executable_path=args.chromium, headless=True,
                                        args=BROWSER_ARGS, timeout=60000)
            try:
                for user in args.users:
                    # One context each: two browsers' worth of cookies and storage.
                    ctx = browser.new_context(ignore_https_errors=True, locale="en-US",
                                              viewport={"width": 1280, "height": 900})
                    page = ctx.new_page()
                    page.on("pageerror", lambda e, u=user: print(f"browser-pageerror ({u}): {e}",
                                                                 flush=True))
                    pages.append((user, page))
                    open_notebook(page, args, user, budget)
                (a, pa), (b, pb) = pages
                sees(pa, args, a, b, budget)
                sees(pb, args, b, a, budget)
            except Exception:
                for user, page in pages:
                    try:
                        page.screenshot(path=os.path.join(args.screenshots, f"failure-{user}.png"),
                                        timeout=15000)
                    except Exception:
                        pass
                raise
            finally:
                browser.close()

    return guarded(args.timeout, body)


if __name__ == "__main__":
    sys.exit(main())
