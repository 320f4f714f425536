#!/usr/bin/env python3
"""Single sign-on, checked from the outside as a person and a program would: over HTTPS through
nginx, trusting only the install's CA, with a real browser (Playwright driving Debian's
Chromium) for the login form.

Runs on the controller against booted test hosts. The names of the platform resolve to the
nginx host (``--resolve``); nothing else is reached. Each check prints ``ok: ...`` or stops the
script with ``FAILED: ...``; the last line is ``all checks passed``.

Input (a JSON file named by $SSO_CHECK_FILE, so no secret is on a command line):
  issuer, ca, resolve {host: ip}, username_claim, groups_claim, users_group, api,
  client {client_id, client_secret, redirect_uris, post_logout_redirect_uris, audience},
  users [{username, password, groups}], outsider {username, password},
  other_resource (a resource with another audience), short_resource (exec-api audience, 1 s ttl),
  api_leeway (seconds the API tolerates past expiry), tokens_out (file for the users' tokens)
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import secrets
import socket
import ssl
import time
import urllib.parse
from pathlib import Path

from checklib import check, chromium, fail
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from playwright.sync_api import sync_playwright

CFG = json.loads(Path(os.environ["SSO_CHECK_FILE"]).read_text())
CTX = ssl.create_default_context(cafile=CFG["ca"])  # the install's CA only
CLIENT = CFG["client"]
REDIRECT = CLIENT["redirect_uris"][0]


class _Conn(http.client.HTTPSConnection):
    """HTTPS to a platform name at the address given by --resolve, certificate checked for the name."""

    def connect(self) -> None:
        ip = CFG["resolve"].get(self.host)
        if ip is None:
            fail(f"{self.host} is not a name of the platform under test")
        sock = socket.create_connection((ip, self.port), timeout=self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def request(method: str, url: str, headers: dict | None = None, body: bytes | None = None):
    u = urllib.parse.urlsplit(url)
    if u.scheme != "https":
        fail(f"not HTTPS: {url}")
    conn = _Conn(u.hostname, u.port or 443, context=CTX, timeout=30)
    conn.request(method, (u.path or "/") + (f"?{u.query}" if u.query else ""), body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), data


def get_json(url: str, headers: dict | None = None):
    status, _, data = request("GET", url, headers)
    if status != 200:
        fail(f"GET {url}: HTTP {status} {data[:200]!r}")
    return json.loads(data)


def b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def verify_jwt(token: str, jwks: dict) -> dict:
    """RS256 signature against the provider's JWKS; returns the claims."""
    head_b64, claims_b64, sig_b64 = token.split(".")
    header = json.loads(b64d(head_b64))
    if header.get("alg") != "RS256":
        fail(f"unexpected token algorithm {header.get('alg')}")
    key = next((k for k in jwks["keys"] if k.get("kid") == header.get("kid")), None)
    if key is None:
        fail("token signed by a key that is not in the JWKS")
    pub = rsa.RSAPublicNumbers(int.from_bytes(b64d(key["e"]), "big"), int.from_bytes(b64d(key["n"]), "big"))
    pub.public_key().verify(b64d(sig_b64), f"{head_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return json.loads(b64d(claims_b64))


# ------------------------------------------------------------------------------ discovery
issuer = CFG["issuer"]
disco_url = issuer + "/.well-known/openid-configuration"
meta = get_json(disco_url)
check(meta["issuer"] == issuer, f"discovery served with issuer {issuer}")
endpoints = {k: v for k, v in meta.items() if k.endswith("_endpoint") or k == "jwks_uri"}
check(all(v.startswith(issuer + "/") for v in endpoints.values()), "every endpoint is under the HTTPS issuer")
forged = get_json(
    disco_url, {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http", "Forwarded": "host=evil"}
)
check(forged == meta, "a forged X-Forwarded-Host/Proto changes nothing in the discovery document")
check("S256" in meta.get("code_challenge_methods_supported", []), "PKCE S256 is offered")
jwks = get_json(meta["jwks_uri"])


# ------------------------------------------------------------------------------ browser
def authorize_url(*, challenge: str | None, state: str, redirect_uri: str = REDIRECT, resource: str | None = None):
    q = {
        "client_id": CLIENT["client_id"], "response_type": "code", "redirect_uri": redirect_uri,
        "scope": "openid profile email groups", "state": state, "nonce": secrets.token_urlsafe(16),
    }  # fmt: skip
    if challenge:
        q |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    if resource:
        q["resource"] = resource
    return meta["authorization_endpoint"] + "?" + urllib.parse.urlencode(q)


class Browser:
    def __init__(self, pw):
        self.browser = chromium(pw, CFG["ca"], CFG["resolve"], CFG.get("chromium", "/usr/bin/chromium"))

    def session(self):
        """A fresh browser profile; the requests it makes to the client's redirect URI are recorded."""
        ctx = self.browser.new_context()
        captured: list[str] = []
        # Observed, not intercepted: Playwright does not route the target of a redirect.
        ctx.on("request", lambda req: captured.append(req.url) if req.url.startswith(REDIRECT) else None)
        return ctx, ctx.new_page(), captured


def login(page, captured, username: str, password: str, *, challenge: str | None, state: str, **kw):
    """Drives the login form; returns the redirect the provider sent the browser to (or None)."""
    t0 = time.monotonic()
    page.goto(authorize_url(challenge=challenge, state=state, **kw))
    if not captured and page.locator("#username").count():
        page.fill("#username", username)
        page.fill("#password", password)
        with page.expect_navigation():
            page.click("#sign-in")
    page.wait_for_load_state()
    login.seconds = time.monotonic() - t0
    return captured[-1] if captured else None


def exchange(code: str, verifier: str, resource: str | None = None) -> dict:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    if resource:
        form["resource"] = resource
    # client_secret_basic: each part form-encoded, then base64 (RFC 6749 2.3.1).
    pair = f"{urllib.parse.quote(CLIENT['client_id'], safe='')}:{urllib.parse.quote(CLIENT['client_secret'], safe='')}"
    basic = base64.b64encode(pair.encode()).decode()
    status, _, data = request(
        "POST", meta["token_endpoint"],
        {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
        urllib.parse.urlencode(form).encode(),
    )  # fmt: skip
    if status != 200:
        fail(f"token request: HTTP {status} {data[:300]!r}")
    return json.loads(data)


def code_flow(browser, user: dict, resource: str | None = None) -> tuple[dict, object, object]:
    verifier = secrets.token_urlsafe(48)
    challenge = b64e(hashlib.sha256(verifier.encode()).digest())
    state = secrets.token_urlsafe(16)
    ctx, page, captured = browser.session()
    url = login(page, captured, user["username"], user["password"], challenge=challenge, state=state, resource=resource)
    if url is None:
        fail(f"login of {user['username']} did not come back to {REDIRECT}: {page.content()[:500]}")
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    if q.get("state") != state or "code" not in q:
        fail(f"login of {user['username']}: unexpected redirect {url}")
    if q.get("iss") not in (None, issuer):
        fail(f"authorization response names issuer {q.get('iss')}")
    return exchange(q["code"], verifier, resource), ctx, page


def api_status(token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, _, _ = request("GET", CFG["api"] + "/db/notebooks", headers)
    return status


tokens_out: dict[str, str] = {}
with sync_playwright() as pw:
    browser = Browser(pw)

    # A short-lived exec-api token first: it has expired by the time the other checks are done.
    first = CFG["users"][0]
    short, ctx, _ = code_flow(browser, first, resource=CFG["short_resource"])
    short_claims = verify_jwt(short["access_token"], jwks)
    ctx.close()

    for user in CFG["users"]:
        tok, ctx, page = code_flow(browser, user)
        name = user["username"]
        idc = verify_jwt(tok["id_token"], jwks)
        check(idc["iss"] == issuer and idc["aud"] in (CLIENT["client_id"], [CLIENT["client_id"]]),
              f"{name}: ID token signed by the provider, issued by {issuer} for {CLIENT['client_id']}")  # fmt: skip
        check(idc.get(CFG["username_claim"]) == name, f"{name}: ID token {CFG['username_claim']} = {name}")
        check(sorted(idc.get(CFG["groups_claim"], [])) == sorted(user["groups"]),
              f"{name}: ID token {CFG['groups_claim']} = {sorted(user['groups'])}")  # fmt: skip
        atc = verify_jwt(tok["access_token"], jwks)
        aud = atc["aud"] if isinstance(atc["aud"], list) else [atc["aud"]]
        check(CLIENT["audience"] in aud and atc.get(CFG["username_claim"]) == name
              and sorted(atc.get(CFG["groups_claim"], [])) == sorted(user["groups"]),
              f"{name}: access token for audience {CLIENT['audience']} with username and groups")  # fmt: skip
        print(f"figure: {name} login (authorize -> form -> redirect) {login.seconds:.2f} s", flush=True)
        code = api_status(tok["access_token"])
        check(code == 200, f"{name}: the exec API accepts the provider's token (HTTP {code})")
        code = api_status(tok["id_token"])
        check(code == 401, f"{name}: the exec API refuses the ID token as an access token (HTTP {code})")
        tokens_out[name] = tok["access_token"]
        if user is CFG["users"][0]:
            # Logging out ends the provider's session: the next authorization asks for a password again.
            q = {"id_token_hint": tok["id_token"], "post_logout_redirect_uri": CLIENT["post_logout_redirect_uris"][0],
                 "client_id": CLIENT["client_id"]}  # fmt: skip
            page.goto(meta["end_session_endpoint"] + "?" + urllib.parse.urlencode(q))
            page.locator("button[autofocus], button[type=submit], input[type=submit]").first.click()
            page.wait_for_load_state()
            page.goto(authorize_url(challenge=b64e(os.urandom(32)), state="after-logout"))
            signed_out = page.locator("#username").count() == 1
            check(signed_out, f"{name}: after end-session the provider asks to sign in again")
        ctx.close()

    outsider = CFG["outsider"]
    ctx, page, captured = browser.session()
    url = login(page, captured, outsider["username"], outsider["password"] + "-wrong", challenge="x" * 43, state="s")
    check(url is None and "Invalid username or password" in page.content(), "a wrong password is refused")
    ctx.close()

    # The provider knows mallory, but she is not in the platform's users group: no access.
    stranger, ctx, _ = code_flow(browser, outsider)
    ctx.close()
    code = api_status(stranger["access_token"])
    check(code == 403, f"the exec API refuses {outsider['username']}, outside the users group (HTTP {code})")

    ctx, page, captured = browser.session()
    page.goto(authorize_url(challenge="x" * 43, state="s", redirect_uri=CLIENT["base_url"] + "/evil"))
    check(not captured and "redirect_uri" in page.content(), "a redirect URI that is not registered is refused")
    page.goto(authorize_url(challenge="x" * 43, state="s", redirect_uri=REDIRECT + "/../evil"))
    check(len(captured) == 0, "a redirect URI that only starts like a registered one is refused")
    page.goto(authorize_url(challenge=None, state="s"))
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(captured[-1]).query)) if captured else {}
    check("code" not in q and (q.get("error") == "invalid_request" or "PKCE" in page.content()),
          f"a request without a code challenge is refused ({q.get('error_description', 'error page')})")  # fmt: skip
    ctx.close()

    other, ctx, _ = code_flow(browser, CFG["users"][0], resource=CFG["other_resource"])
    ctx.close()
    browser.browser.close()

other_aud = verify_jwt(other["access_token"], jwks)["aud"]
code = api_status(other["access_token"])
check(code == 401, f"the exec API refuses a token of this provider for audience {other_aud!r} (HTTP {code})")
check(api_status(None) == 401, "the exec API refuses a request without a token")
lifetime = short_claims["exp"] - short_claims["iat"]
if lifetime > 60:
    fail(f"the short-lived token lives {lifetime} s (aud {short_claims['aud']})")
wait = short_claims["exp"] + CFG["api_leeway"] + 1 - time.time()
if wait > 0:
    time.sleep(wait)
code = api_status(short["access_token"])
check(code == 401, f"the exec API refuses an expired token of this provider (HTTP {code})")

Path(CFG["tokens_out"]).write_text(json.dumps(tokens_out))
os.chmod(CFG["tokens_out"], 0o600)
print("all checks passed", flush=True)
