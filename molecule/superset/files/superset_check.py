#!/usr/bin/env python3
"""Superset, checked from the outside as its users see it: over HTTPS through nginx, trusting only
the install's CA, with a real browser (Playwright driving Debian's Chromium, ../../shared/checklib.py)
on the test provider's login form.

  superset_check.py main            the admin group's user is Admin, the users group's user gets the
                                    mapped role and no admin page, an outsider and a forged OAuth
                                    state get no session, the dashboard shows the executions the
                                    verify play created (with its load time), logout ends the
                                    provider's session
  superset_check.py admin-removed   the admin user, out of the admin group at the provider, logs in
                                    again and is Admin no more

Input (a JSON file named by $SUPERSET_CHECK_FILE, so no secret is on a command line): superset, ca,
resolve {host: ip}, chromium, user, admin, outsider {username, password}, notebooks {ok, fail}.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from checklib import check, chromium, figure, held_callback, ok, sign_in, with_state

CFG = json.loads(Path(os.environ["SUPERSET_CHECK_FILE"]).read_text())
SS = CFG["superset"]
PHASE = sys.argv[1] if len(sys.argv) > 1 else "main"


def login(browser, user: dict):
    """Superset's OAuth login, the provider's form and back; returns (context, page)."""
    ctx = browser.new_context()
    page = ctx.new_page()
    sign_in(page, SS + "/login/oidc", user)
    return ctx, page


FETCH = """async (path) => {
  const r = await fetch(path, {credentials: "same-origin", redirect: "follow"});
  return [r.status, await r.text(), r.url];
}"""


def api(page, path: str):
    """A request in the page (the browser's cookies and name resolution); returns (status, JSON or None)."""
    status, text, _ = fetch(page, path)
    try:
        body = json.loads(text)
    except ValueError:  # an HTML page: not logged in
        body = None
    return status, body


def fetch(page, path: str) -> tuple[int, str, str]:
    if not page.url.startswith(SS + "/"):
        page.goto(SS + "/health")
    return tuple(page.evaluate(FETCH, path))


def roles(page) -> list[str] | None:
    status, body = api(page, "/api/v1/me/roles/")
    if status != 200 or not body:
        return None
    return sorted(body["result"].get("roles", {}).keys())


def no_session(page, who: str) -> None:
    status, _ = api(page, "/api/v1/me/")
    check(status == 401, f"{who}: no Superset session (GET /api/v1/me/ is HTTP {status})")


def main() -> None:
    with sync_playwright() as pw:
        browser = chromium(pw, CFG["ca"], CFG["resolve"], CFG.get("chromium", "/usr/bin/chromium"))
        adm, usr = CFG["admin"], CFG["user"]

        if PHASE == "admin-removed":
            ctx, page = login(browser, adm)
            r = roles(page)
            check(
                r is not None and "Admin" not in r and "Gamma" in r,
                f"{adm['username']}, out of the admin group at the provider, logs in again with roles {r}",
            )
            status, _ = api(page, "/api/v1/log/")
            check(status in (401, 403), f"and the admin-only log API is refused (HTTP {status})")
            print("all checks passed", flush=True)
            return

        ctx, page = login(browser, adm)
        r = roles(page)
        check(r is not None and "Admin" in r, f"{adm['username']} (admin group) logs in and is Admin: {r}")
        check(page.url.startswith(SS + "/"), f"and lands on Superset over https ({page.url})")
        status, _ = api(page, "/api/v1/log/")
        check(status == 200, f"the admin reaches the admin-only log API (HTTP {status})")

        # The dashboard, as its viewers see it: every chart drawn, the executions in it.
        t0 = time.monotonic()
        page.goto(SS + "/superset/dashboard/notebook-executions/")
        for name in (CFG["notebooks"]["ok"], CFG["notebooks"]["fail"]):
            page.get_by_text(name, exact=False).first.wait_for(timeout=120000)
        page.locator(".header-line, .big-number-total, .superset-legacy-chart-big-number").first.wait_for(timeout=60000)
        seconds = time.monotonic() - t0
        figure(f"dashboard load time in the browser: {seconds:.1f} s (navigation to both notebooks shown)")
        body = page.inner_text("body")
        check("Notebook executions" in body, "the dashboard 'Notebook executions' is shown")
        for title in ("Runs per day", "Success rate", "Duration by notebook", "Latest failures"):
            check(title in body, f"with its chart '{title}'")
        check(
            CFG["notebooks"]["fail"] in page.locator("body").inner_text()
            and "error" not in page.locator(".alert-danger, .ant-alert-error").all_inner_texts(),
            "the failed execution of the verify play is listed, no chart shows an error",
        )
        page.screenshot(path=CFG["screenshot"], full_page=True)
        ok(f"screenshot: {CFG['screenshot']}")

        status, body = api(page, "/api/v1/dashboard/notebook-executions/charts")
        check(status == 200 and len(body["result"]) == 4, f"the dashboard has its four charts (HTTP {status})")

        # Logout ends the provider's session: the next login asks for a password.
        page.goto(SS + "/logout/")
        page.locator("button[autofocus], button[type=submit], input[type=submit]").first.click()
        page.wait_for_load_state()
        no_session(page, "after logout")
        page.goto(SS + "/login/oidc")
        page.wait_for_load_state()
        check(
            page.locator("#username").count() == 1,
            f"and the provider's session ended with it: logging in again asks for a password ({page.url})",
        )
        ctx.close()

        ctx, page = login(browser, usr)
        r = roles(page)
        check(
            r is not None and "Gamma" in r and "Admin" not in r and "Alpha" not in r,
            f"{usr['username']} (users group) gets the mapped role only: {r}",
        )
        for path in ("/api/v1/log/", "/api/v1/database/1/connection"):
            status, _ = api(page, path)
            check(status in (401, 403, 404), f"{usr['username']} cannot reach the admin API {path} (HTTP {status})")
        status, _, url = fetch(page, "/users/list/")
        check(
            not (status == 200 and "/users/list" in url),
            f"{usr['username']} cannot open the users admin page (HTTP {status} at {url})",
        )
        ctx.close()

        ctx, page = login(browser, CFG["outsider"])
        no_session(page, f"{CFG['outsider']['username']} (in no platform group) is refused")
        ctx.close()

        # A real login held back at Superset's callback: the provider's code with a state Superset
        # did not issue leaves no session; the same callback with its own state then logs in, so
        # the refusal was the state's.
        ctx = browser.new_context()
        page = ctx.new_page()
        issued = held_callback(pw, page, SS + "/login/oidc", usr, SS + "/oauth-authorized/oidc")
        page.goto(with_state(issued, "forged-" + str(int(time.time()))))
        no_session(page, f"the provider's code with a forged OAuth state is refused (landed on {page.url})")
        page.goto(issued)
        r = roles(page)
        check(r is not None and "Gamma" in r, f"the same code with Superset's own state logs in: {r}")
        ctx.close()

        browser.close()
        print("all checks passed", flush=True)


if __name__ == "__main__":
    main()
