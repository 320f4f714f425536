"""Logging in to Superset as people do: through the provider's form in a real browser, over
HTTPS through nginx. Which roles the provider's groups give (the admin group Admin, the users
group Gamma only, anyone else no session), a forged OAuth state, logout; what each session may
reach is then asked of Superset's REST API with that browser's cookies.
"""

from __future__ import annotations

import json
import time

from browser import held_callback, with_state

FETCH = """async (path) => {
  const r = await fetch(path, {credentials: "same-origin"});
  return [r.status, await r.text()];
}"""


def in_page(page, origin: str, path: str) -> tuple[int, str]:
    """GET path as the page's own script would (the browser's cookies): (status, body)."""
    if not page.url.startswith(origin + "/"):
        page.goto(origin + "/health")
    status, text = page.evaluate(FETCH, path)
    return status, text


def test_admin_group_member_is_superset_admin(admin_session):
    roles = admin_session.roles()
    assert roles and "Admin" in roles, f"{admin_session.who} (admin group) has roles {roles}"


def test_login_lands_on_superset_over_https(admin_session):
    assert admin_session.page.url.startswith(admin_session.url + "/"), f"the login ended at {admin_session.page.url}"


def test_admin_reaches_the_admin_only_log_api(admin_session):
    r = admin_session.get("/api/v1/log/")
    assert r.status_code == 200, f"{admin_session.who}: GET /api/v1/log/ is HTTP {r.status_code}"


def test_users_group_member_gets_gamma_only(member_session):
    roles = member_session.roles()
    assert roles and "Gamma" in roles and not {"Admin", "Alpha"} & set(roles), (
        f"{member_session.who} (users group) has roles {roles}"
    )


def test_users_group_member_cannot_reach_admin_apis(member_session):
    answers = {path: member_session.get(path).status_code for path in ("/api/v1/log/", "/api/v1/database/1/connection")}
    reached = {path: status for path, status in answers.items() if status not in (401, 403, 404)}
    assert not reached, f"{member_session.who} reached admin APIs: {reached}"


def test_users_group_member_cannot_open_the_users_admin_page(member_session):
    r = member_session.http.get(member_session.url + "/users/list/", timeout=60)
    shown = r.status_code == 200 and "/users/list" in r.url
    assert not shown, f"{member_session.who} opened the users admin page (HTTP {r.status_code} at {r.url})"


def test_user_in_no_platform_group_gets_no_session(superset_login, outsider):
    status = superset_login(outsider).get("/api/v1/me/").status_code
    assert status == 401, f"{outsider['username']} (groups {outsider['groups']}): GET /api/v1/me/ is HTTP {status}"


def test_forged_oauth_state_gets_no_session_and_the_real_one_does(browser, superset_url, member):
    """A real login held back at Superset's callback: the provider's code with a state Superset did
    not issue leaves no session; the same callback with its own state then logs in, so the refusal
    was the state's."""
    context = browser.new_context()
    try:
        page = context.new_page()
        issued = held_callback(browser.playwright, page, f"{superset_url}/login/oidc", member,
                               f"{superset_url}/oauth-authorized/oidc")  # fmt: skip
        page.goto(with_state(issued, f"forged-{int(time.time())}"))
        landed = page.url
        forged, _ = in_page(page, superset_url, "/api/v1/me/")
        page.goto(issued)
        status, text = in_page(page, superset_url, "/api/v1/me/roles/")
        roles = sorted(json.loads(text)["result"]["roles"]) if status == 200 else None
    finally:
        context.close()
    assert forged == 401, f"with a forged state (landed on {landed}): GET /api/v1/me/ is HTTP {forged}"
    assert roles and "Gamma" in roles, f"the same code with Superset's own state: HTTP {status}, roles {roles}"


def test_logout_ends_the_superset_and_the_provider_session(superset_login, member):
    session = superset_login(member)
    page = session.page
    page.goto(session.url + "/logout/")
    page.locator("button[autofocus], button[type=submit], input[type=submit]").first.click()
    page.wait_for_load_state()
    after, _ = in_page(page, session.url, "/api/v1/me/")
    page.goto(session.url + "/login/oidc")
    page.wait_for_load_state()
    asks = page.locator("#username").count() == 1
    assert after == 401, f"after logout GET /api/v1/me/ is HTTP {after}"
    assert asks, f"after logout, logging in again goes straight through, no password asked ({page.url})"
