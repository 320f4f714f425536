"""Logging in to JupyterHub, as people do it: the hub's login, the provider's form in a real browser
(Debian's Chromium, trusting only the install's CA), and back. Who gets in, who is refused and
told why, who is an admin, and that the hub follows the provider's groups at the next login.

No test here needs another to have run first. The last one restarts the provider (to change a
user's groups there), which ends the provider's sessions and tokens: the lab tests
(test_hub_lab.py) log alice in afresh, so they do not depend on running before or after it.
"""

from __future__ import annotations

import time

import pytest
import requests
from browser import held_callback, with_state
from hublib import hub_login
from provider_admin import groups_at_provider


@pytest.fixture(scope="module")
def admin_login(browser, hub_url, admin):
    login = hub_login(browser, hub_url, admin)
    yield login
    login.context.close()


@pytest.fixture
def admin_without_admin_group(provider_host, issuer, ca, admin, admin_group):
    """The provider's administrator takes the admin group away from the admin; it is given back
    after the test, whatever happened in it."""
    groups = [g for g in admin["groups"] if g != admin_group]
    with groups_at_provider(provider_host, issuer, ca, admin["username"], groups):
        yield admin


def test_forged_oauth_state_is_refused_and_leaves_no_session(browser, hub_url, users):
    """The provider's real, unused code for alice, with a state the hub never issued."""
    context = browser.new_context()
    try:
        page = context.new_page()
        issued = held_callback(browser.playwright, page, f"{hub_url}/hub/oauth_login", users["alice"],
                               f"{hub_url}/hub/oauth_callback")  # fmt: skip
        r = page.goto(with_state(issued, f"forged-{int(time.time())}"))
        body = page.content().lower()
        assert r.status == 400 and "state" in body and "/hub/spawn" not in page.url, (
            f"the callback with a forged state: HTTP {r.status} at {page.url}; it names the state: {'state' in body}"
        )
        r = page.goto(f"{hub_url}/hub/api/user")
        assert r.status in (401, 403), f"a session came of the forged state: /hub/api/user is HTTP {r.status}"
    finally:
        context.close()


def test_user_outside_the_platform_groups_is_refused(browser, hub_url, outsider):
    login = hub_login(browser, hub_url, outsider)
    login.context.close()
    status = login.statuses.get("/hub/oauth_callback")
    assert status == 403, f"{outsider['username']} (groups {outsider['groups']}): the hub's callback is HTTP {status}"


def test_name_that_cannot_be_a_unix_account_is_refused_with_the_reason(browser, hub_url, not_unix):
    login = hub_login(browser, hub_url, not_unix)
    try:
        status = login.statuses.get("/hub/oauth_callback")
        told = "cannot be a Unix account name" in login.page.content()
    finally:
        login.context.close()
    assert status == 403 and told, f"{not_unix['username']}: the hub's callback is HTTP {status}, explained: {told}"


def test_admin_group_member_is_a_hub_admin(admin_login, hub_url, admin, admin_group):
    status, me = admin_login.api(hub_url, "GET", "/user")
    me = me or {}
    assert status == 200 and me.get("admin") and admin_group in me.get("groups", []), (
        f"{admin['username']}: GET /hub/api/user is HTTP {status}, admin {me.get('admin')}, groups {me.get('groups')}"
    )


def test_hub_admin_may_list_the_hubs_users(admin_login, hub_url, admin):
    status, listed = admin_login.api(hub_url, "GET", "/users")
    assert status == 200 and listed, f"{admin['username']}: GET /hub/api/users is HTTP {status}"


def test_admin_is_offered_every_profile_of_her_groups(admin_login, hub_url, admin, setting):
    offered = sorted(admin_login.offered_profiles(hub_url))
    expected = sorted(p["name"] for p in setting("profiles") if set(p["groups"]) & set(admin["groups"]))
    assert offered == expected, f"{admin['username']} (groups {admin['groups']}) is offered {offered}"


@pytest.mark.parametrize("path", ["/hub/login", "/hub/oauth_login"])
def test_login_pages_set_only_secure_cookies(hub_url, ca, path):
    r = requests.get(f"{hub_url}{path}", verify=ca, timeout=30, allow_redirects=False)
    cookies = r.raw.headers.getlist("Set-Cookie")
    assert cookies, f"{path} (HTTP {r.status_code}) set no cookie to check"
    insecure = [c.split("=", 1)[0] for c in cookies if "secure" not in [a.strip().lower() for a in c.split(";")[1:]]]
    assert not insecure, f"{path} sets cookies without Secure: {insecure}"


def test_admin_out_of_the_admin_group_at_the_provider_is_no_hub_admin_at_next_login(
    admin_without_admin_group, browser, hub_url, admin_group
):
    login = hub_login(browser, hub_url, admin_without_admin_group)
    try:
        status, me = login.api(hub_url, "GET", "/user")
        me = me or {}
        page = login.page.goto(f"{hub_url}/hub/admin").status
    finally:
        login.context.close()
    who = admin_without_admin_group["username"]
    assert status == 200 and not me.get("admin") and admin_group not in me.get("groups", []), (
        f"{who}, out of {admin_group} at the provider, logs in again: admin {me.get('admin')}, "
        f"groups {me.get('groups')}"
    )
    assert page == 403, f"and /hub/admin answers {who} with HTTP {page}"
