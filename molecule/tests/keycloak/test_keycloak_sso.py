"""Single sign-on with Keycloak as the provider (scenario `keycloak`, with a server archive only),
as people and programs meet it: Keycloak's own login form in a real browser (Debian's Chromium)
through nginx, into the hub and Superset; the exec API judging Keycloak's access tokens;
Keycloak's administration closed to the outside; and a rotation of the administrator's password
by the playbook, the way an operator does it.

The logins use the same helpers as the external-provider scenarios (browser.py, oidc.py), whose
form submission knows Keycloak's button; expectations come from the inventory (users, groups)
and the roles' documented defaults."""

from __future__ import annotations

import secrets

import pytest
from hostlib import Hub, browser_hub_token, fetch
from hublib import hub_login
from oidc import api_status, forged
from supersetlib import SupersetSession


def test_a_person_signs_in_to_the_hub_through_keycloaks_form(browser, hub_url, users, ca):
    token = browser_hub_token(browser, hub_url, users["alice"])
    me = Hub(hub_url, ca, "alice", token).http.get(f"{hub_url}/hub/api/user", timeout=30)
    assert me.status_code == 200 and me.json()["name"] == "alice", f"/hub/api/user: {me.status_code} {me.text[:300]}"


def test_someone_outside_the_users_group_is_refused_by_the_hub(browser, hub_url, outsider):
    login = hub_login(browser, hub_url, outsider)
    login.context.close()
    status = login.statuses.get("/hub/oauth_callback")
    assert status == 403, f"{outsider['username']} (groups {outsider['groups']}): the hub's callback is HTTP {status}"


def test_superset_maps_keycloaks_groups_to_its_roles(browser, superset_url, ca, users):
    sessions = {name: SupersetSession(browser, superset_url, ca, users[name]) for name in ("carol", "alice")}
    try:
        roles = {name: s.roles() for name, s in sessions.items()}
    finally:
        for s in sessions.values():
            s.close()
    assert roles["carol"] is not None and "Admin" in roles["carol"], f"carol (platform-admins): {roles['carol']}"
    assert roles["alice"] is not None and "Admin" not in roles["alice"], f"alice (platform-users): {roles['alice']}"


def test_keycloaks_access_token_names_the_exec_api_and_the_groups(provider, provider_tokens, exec_api_client):
    claims = provider.claims(provider_tokens["alice"])
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    assert exec_api_client.audience in auds, f"aud {aud}"
    assert claims.get("preferred_username") == "alice" and "platform-users" in claims.get("groups", []), claims
    # full_scope_allowed is off: the token carries no roles of the user.
    assert "realm_access" not in claims and "resource_access" not in claims, sorted(claims)


def test_the_exec_api_accepts_keycloaks_token_and_refuses_a_forged_one(api_url, ca, provider_tokens):
    assert api_status(api_url, ca, provider_tokens["alice"]) == 200
    assert api_status(api_url, ca, forged(provider_tokens["alice"])) == 401


# From the controller, outside platform_admin_networks: nginx refuses the admin console, the Admin
# REST API and the master realm (403), and publishes nothing outside its allow-list (404).
CLOSED = [("/admin/master/console/", 403), ("/admin/realms/platform", 403),
          ("/realms/master/.well-known/openid-configuration", 403), ("/", 404)]  # fmt: skip


@pytest.mark.parametrize(("path", "status"), CLOSED, ids=[p for p, _ in CLOSED])
def test_keycloaks_administration_is_closed_to_the_outside(path, status, auth_url, ca):
    r = fetch(auth_url + path, ca)
    assert r.status_code == status, f"{path} from outside the admin network: HTTP {r.status_code}, expected {status}"


def test_the_realm_is_open_to_the_outside(auth_url, realm, ca):
    r = fetch(f"{auth_url}/realms/{realm}/.well-known/openid-configuration", ca)
    assert r.status_code == 200, f"the realm's discovery: HTTP {r.status_code}"


def test_a_rotated_administrator_password_takes_effect_and_the_old_one_is_dead(
    admin_login, converge_keycloak, kc, kc_inputs, secrets_dir, tmp_path
):
    """The operator changes the secret and runs playbooks/keycloak.yml: the new password logs in,
    the old one does not, no temporary administrator nor its file is left, a second run changes
    nothing. The original password is put back the same way at the end."""
    admin, secret = kc_inputs["keycloak_admin_username"], secrets_dir / "keycloak_admin_password"
    old = secret.read_text()
    old_file = tmp_path / "old"
    old_file.write_text(old)
    try:
        secret.write_text(secrets.token_urlsafe(24) + "\n")
        run = converge_keycloak()
        assert run.rc == 0, f"the rotating run failed:\n{run.output[-3000:]}"
        assert admin_login(admin, "keycloak_admin_password")["login"] == 200, "the new password does not log in"
        assert admin_login(admin, old_file)["login"] == 401, "the old password still logs in"
        left = admin_login(admin, "keycloak_admin_password", "master/users?username=bootstrap-admin&exact=true")
        assert left["master/users?username=bootstrap-admin&exact=true"] == [], "a temporary administrator is left"
        assert not kc.file("/etc/keycloak/bootstrap.env").exists, "bootstrap.env is left on the host"
        again = converge_keycloak()
        assert again.rc == 0 and again.recap("changed") == 0, f"the run after the rotation:\n{again.output[-3000:]}"
    finally:
        secret.write_text(old)
        back = converge_keycloak()
    assert back.rc == 0 and admin_login(admin, "keycloak_admin_password")["login"] == 200, back.output[-3000:]
