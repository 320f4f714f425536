"""The platform's OpenID provider as its clients see it, and the fixtures built on it.

Over HTTPS through nginx, trusting only the install's CA: discovery, the JWKS, logins with the
authorization code flow and PKCE through the provider's own form in a real browser (Debian's
Chromium, the `browser` fixture), the token exchange with the client's secret, and tokens'
signatures checked against the JWKS (RS256). `forged` re-signs a token with a key of its own.

The fixtures at the bottom are imported by the conftest.py of the areas that log in through
the provider (sso/, exec_api/), so they work in scenarios without a hub; the logins themselves
are made once per session whichever area asks first (`_LOGINS`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field

import httpx
import pytest
import requests
from browser import SUBMIT
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from exec_api.client import ExecApiClient, ExecApiError
from hostlib import RULES

# What `from oidc import *` gives an area's conftest.py: the fixtures at the bottom.
__all__ = ["claims_names", "exec_api_client", "members", "outsider", "provider",
           "provider_login", "provider_tokens"]  # fmt: skip


def b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def forged(token: str) -> str:
    """The same header (key id included) and claims, signed with a fresh RSA key of our own."""
    head, claims, _ = token.split(".")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signature = key.sign(f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{claims}.{b64e(signature)}"


@dataclass(frozen=True)
class Client:
    """A client registered at the provider (the wiring's platform_oidc_clients entry)."""

    client_id: str
    client_secret: str
    base_url: str
    redirect_uri: str
    post_logout_uri: str
    audience: str = ""


@dataclass
class Login:
    """One browser profile's login: the provider's tokens, the seconds it took (authorize ->
    form -> redirect), and the profile (its page still on the client's redirect)."""

    tokens: dict
    seconds: float
    context: object
    page: object


@dataclass
class Provider:
    issuer: str
    ca: str
    http: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.http.verify = self.ca
        self.http.trust_env = False  # REQUESTS_CA_BUNDLE would override `verify`
        self.meta = self.discovery()
        self.jwks = self.get_json(self.meta["jwks_uri"])

    def get_json(self, url: str, headers: dict | None = None) -> dict:
        r = self.http.get(url, headers=headers or {}, timeout=30)
        assert r.status_code == 200, f"GET {url}: HTTP {r.status_code} {r.text[:200]}"
        return r.json()

    def discovery(self, headers: dict | None = None) -> dict:
        return self.get_json(self.issuer + "/.well-known/openid-configuration", headers)

    def claims(self, token: str) -> dict:
        """The token's claims once its RS256 signature checks out against the provider's JWKS."""
        head_b64, claims_b64, sig_b64 = token.split(".")
        header = json.loads(b64d(head_b64))
        assert header.get("alg") == "RS256", f"token algorithm {header.get('alg')}, not RS256"
        key = next((k for k in self.jwks["keys"] if k.get("kid") == header.get("kid")), None)
        assert key is not None, f"token signed by key {header.get('kid')!r}, which is not in the JWKS"
        numbers = rsa.RSAPublicNumbers(int.from_bytes(b64d(key["e"]), "big"), int.from_bytes(b64d(key["n"]), "big"))
        signed = f"{head_b64}.{claims_b64}".encode()
        numbers.public_key().verify(b64d(sig_b64), signed, padding.PKCS1v15(), hashes.SHA256())
        return json.loads(b64d(claims_b64))

    def authorize_url(self, client: Client, *, challenge: str | None, state: str, redirect_uri: str | None = None,
                      resource: str | None = None) -> str:  # fmt: skip
        q = {
            "client_id": client.client_id, "response_type": "code", "redirect_uri": redirect_uri or client.redirect_uri,
            "scope": "openid profile email groups", "state": state, "nonce": secrets.token_urlsafe(16),
        }  # fmt: skip
        if challenge:
            q |= {"code_challenge": challenge, "code_challenge_method": "S256"}
        if resource:
            q["resource"] = resource
        return self.meta["authorization_endpoint"] + "?" + urllib.parse.urlencode(q)

    def end_session_url(self, client: Client, id_token: str) -> str:
        q = {"id_token_hint": id_token, "post_logout_redirect_uri": client.post_logout_uri,
             "client_id": client.client_id}  # fmt: skip
        return self.meta["end_session_endpoint"] + "?" + urllib.parse.urlencode(q)

    def exchange(self, client: Client, code: str, verifier: str, resource: str | None = None) -> dict:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": client.redirect_uri,
                "code_verifier": verifier}  # fmt: skip
        if resource:
            form["resource"] = resource
        # client_secret_basic: each part form-encoded, then base64 (RFC 6749 2.3.1).
        auth = (urllib.parse.quote(client.client_id, safe=""), urllib.parse.quote(client.client_secret, safe=""))
        r = self.http.post(self.meta["token_endpoint"], data=form, auth=auth, timeout=30)
        assert r.status_code == 200, f"token request: HTTP {r.status_code} {r.text[:300]}"
        return r.json()


def profile(browser, client: Client):
    """A fresh browser profile and page; the URLs it requests at the client's redirect URI are
    recorded (observed, not intercepted: Playwright does not route the target of a redirect)."""
    context = browser.new_context()
    captured: list[str] = []
    context.on("request", lambda req: captured.append(req.url) if req.url.startswith(client.redirect_uri) else None)
    return context, context.new_page(), captured


def submit_form(page, username: str, password: str) -> None:
    page.fill("#username", username)
    page.fill("#password", password)
    with page.expect_navigation():
        page.click(SUBMIT)
    page.wait_for_load_state()


def code_flow(browser, provider: Provider, client: Client, user: dict, resource: str | None = None) -> Login:
    """A person's login: authorize with PKCE, the provider's form, the redirect back with a code
    (for the state sent), then the client's token request. The caller closes login.context."""
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(16)
    context, page, captured = profile(browser, client)
    t0 = time.monotonic()
    page.goto(provider.authorize_url(client, challenge=b64e(hashlib.sha256(verifier.encode()).digest()),
                                     state=state, resource=resource))  # fmt: skip
    if not captured:
        page.wait_for_selector("#username", timeout=30000)
        submit_form(page, user["username"], user["password"])
    seconds = time.monotonic() - t0
    assert captured, f"login of {user['username']} did not come back to {client.redirect_uri}: {page.url}"
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(captured[-1]).query))
    assert q.get("state") == state and "code" in q, f"login of {user['username']}: unexpected redirect {captured[-1]}"
    assert q.get("iss") in (None, provider.issuer), f"the authorization response names issuer {q.get('iss')}"
    return Login(provider.exchange(client, q["code"], verifier, resource), seconds, context, page)


def api_status(api_url: str, ca: str, token: str) -> int:
    """The exec API's answer to a token, through its own client: 200, or the refusal's status."""
    with httpx.Client(base_url=api_url, verify=ssl.create_default_context(cafile=ca), trust_env=False) as http:
        try:
            ExecApiClient(token=token, http=http).notebooks()
        except ExecApiError as e:
            return e.status_code
    return 200


# ------------------------------------------------------------------------------ fixtures
# Expected values come from the operator's inputs (external_idp.yml, the inventory) and the
# roles' documented defaults (group_vars/all: platform_oidc_*), never from the wiring's output.
_LOGINS: dict[tuple, Login] = {}


@pytest.fixture(scope="session")
def claims_names(platform_vars) -> dict[str, str]:
    return {
        "username": platform_vars.get("platform_oidc_username_claim", "preferred_username"),
        "groups": platform_vars.get("platform_oidc_groups_claim", "groups"),
    }


@pytest.fixture(scope="session")
def members(platform_vars, users) -> list[dict]:
    """The users in the platform's users group (platform_oidc_users_group, default platform-users)."""
    group = platform_vars.get("platform_oidc_users_group", "platform-users")
    return [u for u in users.values() if group in u.get("groups", [])]


@pytest.fixture(scope="session")
def outsider(platform_vars, users) -> dict:
    """A user the provider knows who is not in the platform's users group (mallory)."""
    group = platform_vars.get("platform_oidc_users_group", "platform-users")
    found = [u for u in users.values() if group not in u.get("groups", [])]
    if not found:
        pytest.skip(f"platform_users has no user outside {group}")
    return found[0]


@pytest.fixture(scope="session")
def provider(platform_vars, ca, names, domain) -> Provider:
    """The site's provider: the external one it names (platform_oidc_issuer), or Keycloak's realm
    at https://auth.<domain>/realms/<platform_keycloak_realm> (identity_provider keycloak, the default)."""
    if platform_vars.get("identity_provider", "keycloak") == "keycloak":
        return Provider(f"https://auth.{domain}/realms/{platform_vars.get('platform_keycloak_realm', 'platform')}", ca)
    issuer = platform_vars.get("platform_oidc_issuer", "").rstrip("/")
    assert issuer, "identity_provider is external, yet platform_oidc_issuer is not set"
    return Provider(issuer, ca)


@pytest.fixture(scope="session")
def exec_api_client(platform_vars, secrets_dir, domain) -> Client:
    """The exec API's registration at the provider: client id (platform_oidc_client_ids, default
    exec-api), the secret the provider issued, Swagger UI's redirect URIs, the audience."""
    secret = secrets_dir / RULES["oidc_client_secret"]("exec_api")
    assert secret.is_file(), f"the exec API's client secret is not at {secret}"
    base = f"https://api.{domain}"
    return Client(
        client_id=platform_vars.get("platform_oidc_client_ids", {}).get("exec_api", "exec-api"),
        client_secret=secret.read_text().strip(),
        base_url=base,
        redirect_uri=f"{base}/docs/oauth2-redirect",
        post_logout_uri=f"{base}/docs",
        audience=platform_vars.get("platform_oidc_audience", "exec-api"),
    )


@pytest.fixture(scope="session")
def provider_login(browser, provider, exec_api_client):
    """provider_login(user) -> that user's Login through the exec API's client (made once per session;
    its browser profile is closed)."""

    def get(user: dict) -> Login:
        key = (provider.issuer, exec_api_client.client_id, user["username"])
        if key not in _LOGINS:
            done = code_flow(browser, provider, exec_api_client, user)
            done.context.close()
            _LOGINS[key] = done
        return _LOGINS[key]

    return get


@pytest.fixture(scope="session")
def provider_tokens(provider_login, users) -> dict[str, str]:
    """alice's and bob's access tokens for the exec API, from a browser login each."""
    return {name: provider_login(users[name]).tokens["access_token"] for name in ("alice", "bob")}
