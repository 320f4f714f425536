"""Bearer-token authentication.

Two kinds of token are accepted (either or both, by configuration):

* an OIDC access token (a JWT): its signature is checked against the identity provider's
  JWKS (``EXEC_API_OIDC_JWKS_URL``, or the ``jwks_uri`` discovered from
  ``<EXEC_API_OIDC_ISSUER>/.well-known/openid-configuration``), and its issuer, audience and
  expiry are checked.  The username is the ``EXEC_API_OIDC_USERNAME_CLAIM`` claim and the
  groups the ``EXEC_API_OIDC_GROUPS_CLAIM`` claim.  Only access tokens are accepted: header
  ``typ`` ``at+jwt`` (RFC 9068) or claim ``typ`` ``Bearer`` (Keycloak); an ID token (claim
  ``typ`` ``ID``, or any ``nonce`` claim) is refused.
* a JupyterHub API token: checked by calling ``<EXEC_API_JUPYTERHUB_API_URL>/user`` with it;
  the hub answers with the token owner's name, groups, admin flag and (JupyterHub >= 2) the
  token's expanded ``scopes``, which must hold ``EXEC_API_JUPYTERHUB_REQUIRED_SCOPE``.

Either way the caller must then be in ``EXEC_API_USERS_GROUP`` or be an admin (403 if not).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from exec_api.core.config import Settings, get_settings
from exec_api.services.paths import USERNAME_RE


@dataclass(frozen=True)
class Principal:
    username: str
    is_admin: bool = False
    groups: tuple[str, ...] = ()
    via: str = "oidc"


class AuthError(Exception):
    """The token is not valid (401)."""


class NotAllowed(AuthError):
    """The token is valid but does not allow using this API (403)."""


ID_REFUSAL = "an ID token is not an access token"


@dataclass
class _JwksCache:
    keys: dict[str, Any] = field(default_factory=dict)
    fetched_at: float = 0.0
    jwks_url: str | None = None


class Authenticator:
    """Verifies tokens; one per application (holds the JWKS and hub-answer caches)."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self._jwks = _JwksCache(jwks_url=settings.oidc_jwks_url)
        self._lock = threading.Lock()
        self._hub_cache: dict[str, tuple[float, Principal]] = {}
        self._jwt_cache: dict[str, tuple[float, Principal, float]] = {}
        self._http = httpx.Client(timeout=settings.http_timeout_seconds, follow_redirects=False)

    # -- OIDC --------------------------------------------------------------------------
    def _discover_jwks_url(self) -> str:
        if self._jwks.jwks_url:
            return self._jwks.jwks_url
        if not self.s.oidc_issuer:
            raise AuthError("OIDC is not configured")
        url = self.s.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"
        r = self._http.get(url)
        r.raise_for_status()
        jwks_uri = r.json().get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise AuthError("issuer metadata has no jwks_uri")
        self._jwks.jwks_url = jwks_uri
        return jwks_uri

    def _fetch_keys(self) -> dict[str, Any]:
        url = self._discover_jwks_url()
        r = self._http.get(url)
        r.raise_for_status()
        keys: dict[str, Any] = {}
        for jwk in r.json().get("keys", []):
            try:
                key = jwt.PyJWK(jwk)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue
            keys[jwk.get("kid") or ""] = key
        return keys

    def _key_for(self, kid: str) -> Any:
        with self._lock:
            fresh = time.monotonic() - self._jwks.fetched_at < self.s.jwks_cache_seconds
            if kid in self._jwks.keys and fresh:
                return self._jwks.keys[kid]
            # Unknown kid (key rotation) or stale cache: refetch, at most once per 10 s.
            if not fresh or time.monotonic() - self._jwks.fetched_at > 10:
                try:
                    self._jwks.keys = self._fetch_keys()
                    self._jwks.fetched_at = time.monotonic()
                except (httpx.HTTPError, ValueError) as e:
                    if kid not in self._jwks.keys:
                        raise AuthError(f"cannot fetch JWKS: {e}") from e
            if kid in self._jwks.keys:
                return self._jwks.keys[kid]
            if kid == "" and len(self._jwks.keys) == 1:
                return next(iter(self._jwks.keys.values()))
        raise AuthError("token signed by an unknown key")

    def verify_jwt(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise AuthError("malformed token") from e
        alg = header.get("alg")
        if alg not in self.s.oidc_algorithms:
            raise AuthError("token algorithm not allowed")
        key = self._key_for(str(header.get("kid") or ""))
        options = (
            {"require": ["exp", "iss", "aud"]}
            if self.s.oidc_issuer
            else {"require": ["exp", "aud"]}
        )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=self.s.oidc_algorithms,
                audience=self.s.oidc_audience,
                issuer=self.s.oidc_issuer or None,
                leeway=self.s.oidc_leeway_seconds,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.PyJWTError as e:
            raise AuthError(f"invalid token: {e}") from e
        _check_access_token(header, claims)
        username = claims.get(self.s.oidc_username_claim)
        if not isinstance(username, str) or not USERNAME_RE.match(username):
            raise AuthError(f"token has no usable {self.s.oidc_username_claim!r} claim")
        groups = _claim_path(claims, self.s.oidc_groups_claim)
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list):
            groups = []
        gset = tuple(str(g).lstrip("/") for g in groups)
        return self._admit(
            Principal(
                username=username, is_admin=self.s.admin_group in gset, groups=gset, via="oidc"
            )
        )

    def _admit(self, p: Principal) -> Principal:
        """Only members of the users group, and admins, may use the API."""
        if p.is_admin or self.s.users_group in p.groups:
            return p
        raise NotAllowed(f"not a member of {self.s.users_group}")

    # -- JupyterHub --------------------------------------------------------------------
    def verify_hub(self, token: str) -> Principal:
        if not self.s.jupyterhub_api_url:
            raise AuthError("JupyterHub tokens are not accepted")
        h = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._hub_cache.get(h)
            if hit and hit[0] > now:
                return hit[1]
        try:
            r = self._http.get(
                self.s.jupyterhub_api_url.rstrip("/") + "/user",
                headers={"Authorization": f"token {token}"},
            )
        except httpx.HTTPError as e:
            raise AuthError(f"cannot reach JupyterHub: {e}") from e
        if r.status_code != 200:
            raise AuthError("token refused by JupyterHub")
        try:
            model = r.json()
        except ValueError as e:
            raise AuthError("bad answer from JupyterHub") from e
        name = model.get("name")
        if (
            model.get("kind", "user") != "user"
            or not isinstance(name, str)
            or not USERNAME_RE.match(name)
        ):
            raise AuthError("JupyterHub token does not belong to a user")
        scopes = model.get("scopes")
        if not isinstance(scopes, list) or not _has_scope(
            scopes, self.s.jupyterhub_required_scope, name
        ):
            raise NotAllowed(f"JupyterHub token lacks the scope {self.s.jupyterhub_required_scope}")
        groups = tuple(str(g) for g in model.get("groups") or [])
        admin = self.s.admin_group in groups or (
            self.s.jupyterhub_admin_is_admin and bool(model.get("admin"))
        )
        p = self._admit(Principal(username=name, is_admin=admin, groups=groups, via="jupyterhub"))
        with self._lock:
            if len(self._hub_cache) > 10000:
                self._hub_cache.clear()
            self._hub_cache[h] = (now + self.s.auth_cache_seconds, p)
        return p

    def authenticate_cached(self, token: str) -> Principal | None:
        """Answer without any network I/O when possible (cached key / cached hub answer),
        so the common case needs no thread hop; None means: call :meth:`authenticate`."""
        oidc = bool(self.s.oidc_issuer or self.s.oidc_jwks_url)
        if oidc and token.count(".") == 2:
            try:
                kid = str(jwt.get_unverified_header(token).get("kid") or "")
            except jwt.PyJWTError as e:
                raise AuthError("malformed token") from e
            h = hashlib.sha256(token.encode()).hexdigest()
            now = time.monotonic()
            hit = self._jwt_cache.get(h)
            if hit and hit[0] > now and hit[2] > time.time():
                return hit[1]
            fresh = now - self._jwks.fetched_at < self.s.jwks_cache_seconds
            if fresh and kid in self._jwks.keys:
                p = self.verify_jwt(token)
                # Remember a verified token briefly (never past its own expiry).
                exp = float(jwt.decode(token, options={"verify_signature": False}).get("exp", 0))
                with self._lock:
                    if len(self._jwt_cache) > 10000:
                        self._jwt_cache.clear()
                    self._jwt_cache[h] = (now + self.s.auth_cache_seconds, p, exp)
                return p
            return None
        if self.s.jupyterhub_api_url:
            hub_hit = self._hub_cache.get(hashlib.sha256(token.encode()).hexdigest())
            if hub_hit and hub_hit[0] > time.monotonic():
                return hub_hit[1]
        return None

    def authenticate(self, token: str) -> Principal:
        oidc = bool(self.s.oidc_issuer or self.s.oidc_jwks_url)
        looks_jwt = token.count(".") == 2
        if oidc and looks_jwt:
            return self.verify_jwt(token)
        if self.s.jupyterhub_api_url:
            return self.verify_hub(token)
        raise AuthError("unsupported token")


def _check_access_token(header: dict[str, Any], claims: dict[str, Any]) -> None:
    """Accept an access token only: header ``typ`` ``at+jwt`` (RFC 9068; also
    ``application/at+jwt``) or claim ``typ`` ``Bearer`` (Keycloak, whose header says ``JWT``).
    An ID token (claim ``typ`` ``ID``, or a ``nonce``, which only ID tokens carry) is refused
    whatever its header says: it proves a login to some client, not a grant to this API."""
    claim_typ = str(claims.get("typ") or "").lower()
    if claim_typ == "id" or "nonce" in claims:
        raise AuthError(ID_REFUSAL)
    header_typ = str(header.get("typ") or "").lower().removeprefix("application/")
    if header_typ != "at+jwt" and claim_typ != "bearer":
        raise AuthError("not an access token (header typ at+jwt or claim typ Bearer expected)")


def _has_scope(scopes: list[Any], required: str, owner: str) -> bool:
    """The hub's ``scopes`` (a token's expanded scopes) hold ``required``, either alone or
    filtered to the token's owner (a role granting ``<scope>!user`` expands to
    ``<scope>!user=<owner>``).  Other filters (``!group=``, ``!server=``) do not count."""
    return required in scopes or f"{required}!user={owner}" in scopes


def _claim_path(claims: dict[str, Any], path: str) -> Any:
    """``groups`` or a dotted path such as ``realm_access.roles``."""
    cur: Any = claims
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


_bearer = HTTPBearer(auto_error=False, description="OIDC access token or JupyterHub API token")


async def get_authenticator(request: Request) -> Authenticator:
    auth: Authenticator | None = getattr(request.app.state, "authenticator", None)
    if auth is None:
        auth = Authenticator(get_settings())
        request.app.state.authenticator = auth
    return auth


def current_user(
    creds: HTTPAuthorizationCredentials | None = Depends(_bearer),
    auth: Authenticator = Depends(get_authenticator),
) -> Principal:
    """FastAPI dependency: the authenticated caller, or 401."""
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "bearer token required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        return auth.authenticate(creds.credentials)
    except NotAllowed as e:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(e)) from e
    except AuthError as e:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            str(e),
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from e


def acting_user(principal: Principal, requested: str | None) -> str:
    """The user a request acts for: the caller, or (admins only) the requested user."""
    if requested is None or requested == principal.username:
        return principal.username
    if principal.is_admin:
        if not USERNAME_RE.match(requested):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "invalid username")
        return requested
    raise HTTPException(
        status.HTTP_403_FORBIDDEN,
        "you may act only for yourself (username does not match your token)",
    )
