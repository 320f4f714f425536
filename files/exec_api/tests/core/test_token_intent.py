"""Tokens carry intent: an OIDC token must be an access token (never an ID token), a
JupyterHub token must hold the exec API's scope, and either way the caller must be a member
of the platform's users group (or an admin)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from exec_api.core.config import Settings
from exec_api.core.security import Authenticator, AuthError

SCOPE = "custom:exec-api:run"


def _get(app_client: Any, token: str) -> Any:
    return app_client.get("/", headers={"Authorization": f"Bearer {token}"})


# ------------------------------------------------------------------------------- OIDC
def test_keycloak_access_token_accepted(app_client, idp):
    # Keycloak: header typ JWT, claim typ Bearer
    r = _get(app_client, idp.token("alice", typ="Bearer"))
    assert r.status_code == 200, r.text


def test_rfc9068_access_token_accepted(app_client, idp):
    # oidc-provider (resource indicators) and RFC 9068: header typ at+jwt, no typ claim
    r = _get(app_client, idp.token("alice", typ=None, header_typ="at+jwt"))
    assert r.status_code == 200, r.text
    r = _get(app_client, idp.token("alice", typ=None, header_typ="application/at+jwt"))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"typ": "ID"},  # Keycloak's ID token
        {"typ": "ID", "header_typ": "at+jwt"},  # whatever the header claims
        {"typ": None, "extra": {"nonce": "n-0S6_WzA2Mj"}},  # a generic ID token
        {"typ": "Bearer", "extra": {"nonce": "abc"}},  # only ID tokens carry a nonce
    ],
    ids=["typ-ID", "typ-ID-header-at+jwt", "nonce", "bearer-with-nonce"],
)
def test_id_token_refused_as_access_token(app_client, idp, kwargs):
    r = _get(app_client, idp.token("alice", **kwargs))
    assert r.status_code == 401, r.text
    assert r.json()["detail"] == "an ID token is not an access token", r.text


def test_token_of_unknown_kind_refused(app_client, idp):
    # neither header typ at+jwt nor claim typ Bearer: nothing says it is an access token
    r = _get(app_client, idp.token("alice", typ=None))
    assert r.status_code == 401, r.text
    assert "not an access token" in r.json()["detail"], r.text


def test_cached_path_applies_the_same_rules(idp):
    s = Settings(
        database_url="postgresql+psycopg://x@y/z",
        oidc_issuer=idp.issuer,
        oidc_audience="exec-api",
    )
    auth = Authenticator(s)
    assert auth.authenticate(idp.token("dora")).username == "dora"  # keys now cached
    assert auth.authenticate_cached(idp.token("dora")) is not None
    with pytest.raises(AuthError, match="an ID token is not an access token"):
        auth.authenticate_cached(idp.token("dora", typ="ID"))
    with pytest.raises(AuthError, match="not a member of platform-users"):
        auth.authenticate_cached(idp.token("dora", ["other"]))


def test_oidc_outsider_forbidden(app_client, idp):
    r = _get(app_client, idp.token("mallory", ["some-other-group"]))
    assert r.status_code == 403, r.text
    assert r.json()["detail"] == "not a member of platform-users", r.text
    r = _get(app_client, idp.token("mallory", []))
    assert r.status_code == 403, r.text


def test_oidc_admin_group_member_allowed(app_client, idp):
    r = _get(app_client, idp.token("root-person", ["exec-api-admins"]))
    assert r.status_code == 200 and r.json()["admin"] is True, r.text


def test_keycloak_group_paths_count(app_client, idp):
    # Keycloak's group mapper gives full paths ("/platform-users")
    r = _get(app_client, idp.token("alice", ["/platform-users"]))
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------------- JupyterHub
def _hub_model(name: str, scopes: list[str] | None, groups: list[str], admin: bool = False):
    """What JupyterHub >= 2 answers to GET /hub/api/user (apihandlers/users.py
    SelfAPIHandler): the user model plus token_id, session_id and the token's expanded
    ``scopes`` (without the identify scopes the hub adds for itself)."""
    model: dict[str, Any] = {
        "kind": "user",
        "name": name,
        "admin": admin,
        "roles": ["user"],
        "groups": groups,
        "server": None,
        "pending": None,
        "created": "2024-01-01T00:00:00.000000Z",
        "last_activity": "2024-01-01T00:00:00.000000Z",
        "servers": {},
        "token_id": "a12",
        "session_id": None,
    }
    if scopes is not None:
        model["scopes"] = scopes
    return model


def _hub_token(idp: Any, model: dict[str, Any]) -> str:
    tok = f"hubtok-{uuid.uuid4().hex}"
    idp.hub_tokens[tok] = model
    return tok


def test_hub_token_with_the_scope_accepted(app_client, idp):
    scopes = [SCOPE, "read:users:name!user=carol", "access:servers!user=carol"]
    tok = _hub_token(idp, _hub_model("carol", scopes, ["platform-users"]))
    r = _get(app_client, tok)
    assert r.status_code == 200 and r.json()["user"] == "carol", r.text


def test_hub_token_with_the_scope_filtered_to_its_owner_accepted(app_client, idp):
    # a role granting "custom:exec-api:run!user" expands to "...!user=<owner>"
    tok = _hub_token(idp, _hub_model("carol", [f"{SCOPE}!user=carol"], ["platform-users"]))
    assert _get(app_client, tok).status_code == 200


@pytest.mark.parametrize(
    "scopes",
    [
        [],  # a token created with "scopes": []
        None,  # a JupyterHub older than 2 (no scopes in the answer)
        ["read:users:name!user=carol", "access:servers!server=carol/"],  # a server's token
        [f"{SCOPE}!user=bob"],  # the scope, but for someone else
        [f"{SCOPE}!group=platform-users"],  # filters other than the owner do not count
        ["access:services!service=exec-api"],  # see README: access scopes are not intent
        ["access:services"],
    ],
    ids=["no-scopes", "pre-2.0", "server-token", "other-user", "group-filter", "access", "all"],
)
def test_hub_token_without_the_scope_refused(app_client, idp, scopes):
    tok = _hub_token(idp, _hub_model("carol", scopes, ["platform-users"]))
    r = _get(app_client, tok)
    assert r.status_code == 403, r.text
    assert r.json()["detail"] == f"JupyterHub token lacks the scope {SCOPE}", r.text


def test_hub_outsider_forbidden(app_client, idp):
    tok = _hub_token(idp, _hub_model("mallory", [SCOPE], ["students"]))
    r = _get(app_client, tok)
    assert r.status_code == 403, r.text
    assert r.json()["detail"] == "not a member of platform-users", r.text


def test_hub_admins_allowed_without_the_users_group(app_client, idp):
    tok = _hub_token(idp, _hub_model("hubadmin", [SCOPE], [], admin=True))
    r = _get(app_client, tok)
    assert r.status_code == 200 and r.json()["admin"] is True, r.text
    tok = _hub_token(idp, _hub_model("grpadmin", [SCOPE], ["exec-api-admins"]))
    assert _get(app_client, tok).status_code == 200


def test_refusals_are_not_cached_as_success(idp):
    s = Settings(
        database_url="postgresql+psycopg://x@y/z",
        oidc_issuer=None,
        jupyterhub_api_url=idp.base + "/hub/api",
    )
    auth = Authenticator(s)
    tok = _hub_token(idp, _hub_model("carol", [], ["platform-users"]))
    for _ in range(2):
        with pytest.raises(AuthError, match="lacks the scope"):
            auth.authenticate(tok)
    assert auth.authenticate_cached(tok) is None
