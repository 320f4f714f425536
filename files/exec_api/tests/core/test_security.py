"""Authentication and authorisation at the HTTP level, against a local IdP (JWKS over HTTP)
and a JupyterHub API stand-in."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

PUBLIC = {"/health", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"}


def _protected_routes(app):
    for path, ops in app.openapi()["paths"].items():
        if path in PUBLIC:
            continue
        for m in ops:
            yield (
                m.upper(),
                path.replace("{", "")
                .replace("}", "")
                .replace("notebook_id", "1")
                .replace("execution_id", "1")
                .replace("param_id", "1")
                .replace("username", "bob"),
            )


def test_every_endpoint_but_liveness_requires_a_token(app_client):
    routes = list(_protected_routes(app_client.app))
    assert len(routes) >= 20
    for method, path in routes:
        r = app_client.request(method, path, json={})
        assert r.status_code == 401, (method, path, r.status_code)
    assert app_client.get("/health").status_code == 200


def test_valid_oidc_token(app_client, idp):
    r = app_client.get("/", headers={"Authorization": f"Bearer {idp.token('alice')}"})
    assert r.status_code == 200
    assert r.json()["user"] == "alice"
    assert r.json()["admin"] is False


@pytest.mark.parametrize(
    "kwargs",
    [
        {"exp_in": -120},  # expired (beyond the 30 s leeway)
        {"aud": "another-client"},
        {"iss": "http://127.0.0.1:1/realms/evil"},
    ],
    ids=["expired", "wrong-audience", "wrong-issuer"],
)
def test_bad_claims_refused(app_client, idp, kwargs):
    tok = idp.token("alice", **kwargs)
    r = app_client.get("/", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 401


def test_forged_signature_refused(app_client, idp):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tok = idp.token("alice", key=other)  # same kid, wrong key
    assert app_client.get("/", headers={"Authorization": f"Bearer {tok}"}).status_code == 401
    tok = idp.token("alice", key=other, kid="unknown-kid")
    assert app_client.get("/", headers={"Authorization": f"Bearer {tok}"}).status_code == 401


def test_unsigned_and_hmac_tokens_refused(app_client, idp):
    now = int(time.time())
    claims = {"preferred_username": "alice", "aud": "exec-api", "iss": idp.issuer, "exp": now + 300}
    none_tok = jwt.encode(claims, key=None, algorithm="none")
    assert app_client.get("/", headers={"Authorization": f"Bearer {none_tok}"}).status_code == 401
    hs = jwt.encode(claims, key="x" * 32, algorithm="HS256", headers={"kid": idp.kid})
    assert app_client.get("/", headers={"Authorization": f"Bearer {hs}"}).status_code == 401


def test_token_without_username_refused(app_client, idp):
    tok = idp.token("alice", extra={"preferred_username": None})
    assert app_client.get("/", headers={"Authorization": f"Bearer {tok}"}).status_code == 401


def test_garbage_and_wrong_scheme(app_client):
    assert app_client.get("/", headers={"Authorization": "Bearer a.b.c"}).status_code == 401
    assert app_client.get("/", headers={"Authorization": "Basic YTpi"}).status_code == 401


def test_jupyterhub_token(app_client, idp):
    idp.hub_tokens["hubtok-carol"] = {
        "kind": "user",
        "name": "carol",
        "admin": False,
        "groups": ["platform-users"],
        "scopes": ["custom:exec-api:run", "read:users:name!user=carol"],
    }
    r = app_client.get("/", headers={"Authorization": "Bearer hubtok-carol"})
    assert r.status_code == 200 and r.json()["user"] == "carol"
    assert app_client.get("/", headers={"Authorization": "Bearer nope"}).status_code == 401
    idp.hub_tokens["hubtok-svc"] = {"kind": "service", "name": "svc"}
    assert app_client.get("/", headers={"Authorization": "Bearer hubtok-svc"}).status_code == 401


def test_admin_from_groups_claim(app_client, idp):
    tok = idp.token("root-person", ["exec-api-admins"])
    r = app_client.get("/", headers={"Authorization": f"Bearer {tok}"})
    assert r.json()["admin"] is True


def test_username_in_request_must_match_token(app_client, user, make_user):
    other = make_user()
    r = app_client.get(f"/db/notebooks/user/{other.name}", headers=user.headers)
    assert r.status_code == 403
    r = app_client.get(f"/list-notebooks/{other.name}", headers=user.headers)
    assert r.status_code == 403
    admin = make_user(admin=True)
    r = app_client.get(f"/db/notebooks/user/{other.name}", headers=admin.headers)
    assert r.status_code == 200


def test_probe_token_for_ready_and_metrics(app_client):
    h = {"Authorization": "Bearer probe-secret-for-tests"}
    r = app_client.get("/ready", headers=h)
    assert r.status_code == 200 and r.json()["database"] == "ok"
    m = app_client.get("/metrics", headers=h)
    assert m.status_code == 200
    assert "exec_api_queue_depth" in m.text and "exec_api_running" in m.text
    assert app_client.get("/metrics").status_code == 401
    assert app_client.get("/ready", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_settings_require_database_url_and_auth(monkeypatch):
    from pydantic import ValidationError

    from exec_api.core.config import Settings

    monkeypatch.delenv("EXEC_API_DATABASE_URL", raising=False)
    with pytest.raises(ValidationError):
        Settings(oidc_issuer="http://x", oidc_audience="a")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="no authentication configured"):
        Settings(
            database_url="postgresql+psycopg://x@y/z",
            oidc_issuer=None,
            jupyterhub_api_url=None,
            oidc_jwks_url=None,
        )
    with pytest.raises(ValidationError, match="AUDIENCE"):
        Settings(
            database_url="postgresql+psycopg://x@y/z", oidc_issuer="http://x", oidc_audience=None
        )


def test_explicit_jwks_url_and_key_rotation(idp):
    from cryptography.hazmat.primitives.asymmetric import rsa as _rsa

    from exec_api.core.config import Settings
    from exec_api.core.security import Authenticator, AuthError

    s = Settings(
        database_url="postgresql+psycopg://x@y/z",
        oidc_issuer=idp.issuer,
        oidc_audience="exec-api",
        oidc_jwks_url=idp.base + "/jwks",
    )
    auth = Authenticator(s)
    assert auth.authenticate(idp.token("dora", ["g1", "platform-users"])).username == "dora"
    # the IdP rotates to a new key (new kid): the next token triggers a JWKS refetch
    old_key, old_kid = idp.key, idp.kid
    idp.key = _rsa.generate_private_key(public_exponent=65537, key_size=2048)
    idp.kid = "test-key-2"
    auth._jwks.fetched_at -= 60  # past the refetch back-off
    try:
        assert auth.authenticate(idp.token("dora")).username == "dora"
        with pytest.raises(AuthError):  # the old key is gone from the JWKS
            auth.authenticate(idp.token("dora", key=old_key, kid=old_kid))
    finally:
        idp.key, idp.kid = old_key, old_kid


def test_hub_answers_are_cached(idp):
    from exec_api.core.config import Settings
    from exec_api.core.security import Authenticator

    s = Settings(
        database_url="postgresql+psycopg://x@y/z",
        oidc_issuer=None,
        jupyterhub_api_url=idp.base + "/hub/api",
    )
    auth = Authenticator(s)
    idp.hub_tokens["hubtok-erin"] = {
        "kind": "user",
        "name": "erin",
        "admin": True,
        "groups": [],
        "scopes": ["custom:exec-api:run"],
    }
    before = idp.requests
    for _ in range(5):
        p = auth.authenticate("hubtok-erin")
    assert p.username == "erin" and p.is_admin
    assert idp.requests - before == 1
