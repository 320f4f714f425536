"""Keycloak as the platform's identity provider (scenario `keycloak`, with a server archive
only): through nginx as clients see it, on its host as the role left it, and its realm through
the Admin REST API. Expected values come from the inventory (domain, realm, groups, users) and
the secrets directory."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from hostlib import fetch


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_text().strip().encode()).hexdigest()


# ------------------------------------------------------------------------- through nginx
def test_discovery_names_the_public_issuer_and_endpoints(auth_url, realm, ca):
    r = fetch(f"{auth_url}/realms/{realm}/.well-known/openid-configuration", ca)
    assert r.status_code == 200, f"discovery: HTTP {r.status_code} {r.text[:300]}"
    issuer = f"{auth_url}/realms/{realm}"
    expected = {"issuer": issuer, "authorization_endpoint": f"{issuer}/protocol/openid-connect/auth",
                "token_endpoint": f"{issuer}/protocol/openid-connect/token",
                "jwks_uri": f"{issuer}/protocol/openid-connect/certs"}  # fmt: skip
    assert {k: r.json().get(k) for k in expected} == expected, f"discovery: {r.json()}"


def test_discovery_offers_pkce_s256_and_the_groups_scope(auth_url, realm, ca):
    d = fetch(f"{auth_url}/realms/{realm}/.well-known/openid-configuration", ca).json()
    offered = {"S256": "S256" in d.get("code_challenge_methods_supported", []),
               "groups": "groups" in d.get("scopes_supported", [])}  # fmt: skip
    assert all(offered.values()), f"discovery offers {offered}: {d}"


@pytest.mark.parametrize("path", ["/health/ready", "/health", "/metrics"])
def test_health_and_metrics_are_not_published(path, auth_url, ca):
    r = fetch(auth_url + path, ca)
    assert r.status_code == 404, f"{auth_url}{path}: HTTP {r.status_code}"


# ------------------------------------------------------------------------- on the host
def test_keycloak_listens_on_loopback_only(kc):
    listening = [s for s in kc.socket.get_listening_sockets() if re.search(r":(8080|9000|7800)$", s)]
    assert sorted(listening) == ["tcp://127.0.0.1:8080", "tcp://127.0.0.1:9000"], f"Keycloak listens on {listening}"


def test_keycloak_is_ready_on_its_management_port(kc):
    answer = kc.ansible("uri", "url=http://127.0.0.1:9000/health/ready", check=False)
    assert answer.get("status") == 200, f"/health/ready on port 9000: {answer.get('status')} {answer.get('msg')}"


def test_no_bootstrap_credentials_remain_on_the_host(kc):
    assert not kc.file("/etc/keycloak/bootstrap.env").exists, "/etc/keycloak/bootstrap.env is still there"


def test_keycloak_secrets_file_is_readable_by_its_group_only(kc):
    env = kc.file("/etc/keycloak/keycloak.env")
    found = (oct(env.mode), env.user, env.group)
    assert found == ("0o640", "root", "keycloak"), f"/etc/keycloak/keycloak.env is {found}"


def test_keycloak_unit_exposure_is_at_most_4(kc):
    out = kc.run("systemd-analyze security --no-pager keycloak.service")
    score = re.search(r"Overall exposure level for keycloak.service:\s+([0-9.]+)", out.stdout)
    assert score and float(score.group(1)) <= 4.0, f"keycloak.service: {out.stdout[-400:]} {out.stderr}"


# ------------------------------------------------------------------------- administration
def test_the_bootstrap_administrator_cannot_log_in(admin_login):
    got = admin_login("bootstrap-admin", "keycloak_bootstrap_password")
    assert got["login"] == 401, f"bootstrap-admin's login: HTTP {got['login']}"


def test_no_bootstrap_administrator_is_left_in_the_master_realm(admin_api):
    left = admin_api["master/users?username=bootstrap-admin&exact=true"]
    assert left == [], f"master realm users named bootstrap-admin: {[u.get('id') for u in left]}"


def test_the_realm_is_protected_against_brute_force(admin_api, realm):
    assert admin_api[realm].get("bruteForceProtected") is True, f"realm {realm}: {admin_api[realm]}"


def test_the_realm_has_a_client_for_each_web_service(admin_api, realm):
    ids = {c["clientId"] for c in admin_api[f"{realm}/clients"]}
    assert {"jupyterhub", "superset"} <= ids, f"clients of {realm}: {sorted(ids)}"


def test_the_hub_client_is_confidential_with_code_flow_and_pkce_only(admin_api, realm):
    hub = next(c for c in admin_api[f"{realm}/clients"] if c["clientId"] == "jupyterhub")
    seen = {k: hub.get(k) for k in ("publicClient", "standardFlowEnabled", "implicitFlowEnabled",
                                    "directAccessGrantsEnabled")}  # fmt: skip
    seen["pkce"] = hub.get("attributes", {}).get("pkce.code.challenge.method")
    expected = {"publicClient": False, "standardFlowEnabled": True, "implicitFlowEnabled": False,
                "directAccessGrantsEnabled": False, "pkce": "S256"}  # fmt: skip
    assert seen == expected, f"the jupyterhub client: {seen}"


def test_the_hub_client_has_exactly_the_hubs_redirect_uris(admin_api, realm, kc_inputs):
    hub_url = f"https://hub.{kc_inputs['platform_domain']}"
    hub = next(c for c in admin_api[f"{realm}/clients"] if c["clientId"] == "jupyterhub")
    seen = (hub.get("redirectUris"), hub.get("attributes", {}).get("post.logout.redirect.uris"))
    expected = ([f"{hub_url}/hub/oauth_callback"], f"{hub_url}/hub/login")
    assert seen == expected, f"the jupyterhub client's redirect and post-logout URIs: {seen}"


def test_the_hub_client_secret_is_the_installs(admin_api, realm, secrets_dir):
    hub = next(c for c in admin_api[f"{realm}/clients"] if c["clientId"] == "jupyterhub")
    same = hub.get("secret_sha256") == sha256_of(Path(secrets_dir) / "oidc_jupyterhub_client_secret")
    assert same, "the jupyterhub client's secret in Keycloak is not oidc_jupyterhub_client_secret"


def test_the_groups_scope_maps_group_names_into_the_groups_claim(admin_api, realm):
    hub = next(c for c in admin_api[f"{realm}/clients"] if c["clientId"] == "jupyterhub")
    scopes = [s for s in admin_api[f"{realm}/client-scopes"] if s["name"] == "groups"]
    assert len(scopes) == 1 and "groups" in hub.get("optionalClientScopes", []), (
        f"groups scopes: {scopes}; the hub's optional scopes: {hub.get('optionalClientScopes')}"
    )
    mapper = scopes[0]["protocolMappers"][0]
    seen = (mapper["protocolMapper"], mapper["config"].get("claim.name"), mapper["config"].get("full.path"))
    assert seen == ("oidc-group-membership-mapper", "groups", "false"), f"the groups scope's mapper: {mapper}"


def test_the_realm_has_the_platforms_groups(admin_api, realm, kc_inputs):
    expected = sorted({kc_inputs["platform_oidc_admin_group"], kc_inputs["platform_oidc_users_group"],
                       *kc_inputs["platform_oidc_groups_custom"]})  # fmt: skip
    groups = sorted(g["name"] for g in admin_api[f"{realm}/groups"])
    assert groups == expected, f"groups of {realm}: {groups}"


def test_the_inventorys_user_exists_in_the_realm(admin_api, realm):
    found = admin_api[f"{realm}/users?username=alice&exact=true"]
    assert len(found) == 1, f"users named alice in {realm}: {len(found)}"
    profile = {k: found[0].get(k) for k in ("email", "firstName", "lastName", "emailVerified")}
    assert profile == {"email": "alice@platform.test", "firstName": "Alice", "lastName": "A", "emailVerified": True}


# Keycloak 26's realm default client scopes: a client without them gets invalid_scope for
# `openid profile email` (the review's first finding), whatever the role's own data says.
DEFAULT_SCOPES = {"basic", "acr", "web-origins", "profile", "email", "roles"}


def test_every_client_has_the_default_scopes_keycloak_kept(admin_api, realm):
    ours = [c for c in admin_api[f"{realm}/clients"] if c["clientId"] in ("jupyterhub", "superset", "exec-api")]
    assert len(ours) == 3, [c["clientId"] for c in ours]
    lacking = {c["clientId"]: sorted(DEFAULT_SCOPES - set(c.get("defaultClientScopes", []))) for c in ours}
    assert not any(lacking.values()), f"default scopes missing: {lacking}"
    assert all({"groups", "offline_access"} <= set(c.get("optionalClientScopes", [])) for c in ours)
