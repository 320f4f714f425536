"""Single sign-on from the outside, as a person and a program meet it: over HTTPS through nginx,
trusting only the install's CA, a real browser (Debian's Chromium) on the provider's login form,
with the exec API's client registration (Swagger UI's redirect URI), and the exec API judging
the tokens it gets.

The provider is the test harness's (molecule/shared/oidc_test_provider.yml); besides the exec
API's resource it knows two more, as any provider with several services would: a resource with
the exec API's audience whose tokens live 1 s, and one for another service's audience
(molecule/shared/oidc_test_provider/config.json.j2).
"""

from __future__ import annotations

import os
import ssl
import time
import urllib.parse

import httpx
import pytest
from oidc import api_status, b64e, code_flow, forged, profile, submit_form

# Seconds the exec API accepts a token past its expiry (EXEC_API_OIDC_LEEWAY_SECONDS, default).
API_LEEWAY = 30


@pytest.fixture(scope="module")
def short_lived(browser, provider, exec_api_client, members) -> dict:
    """alice's token for the short-lived resource, taken first: it has expired by the end."""
    done = code_flow(browser, provider, exec_api_client, members[0], resource=f"{exec_api_client.base_url}/short-lived")
    done.context.close()
    return done.tokens


@pytest.fixture(scope="module")
def other_audience(browser, provider, exec_api_client, members, domain) -> str:
    done = code_flow(browser, provider, exec_api_client, members[0], resource=f"https://other.{domain}/")
    done.context.close()
    return done.tokens["access_token"]


@pytest.fixture(params=["alice", "bob", "carol"])
def member(request, users, members) -> dict:
    """Each member of the users group (platform_users in molecule/shared/external_idp.yml)."""
    user = users[request.param]
    assert user in members, f"{request.param} is not in the users group: {user['groups']}"
    return user


# ------------------------------------------------------------------------------ discovery
def test_a_short_lived_token_lives_a_minute_at_most(provider, short_lived):
    claims = provider.claims(short_lived["access_token"])
    assert claims["exp"] - claims["iat"] <= 60, f"the short-lived token lives {claims['exp'] - claims['iat']} s"


def test_discovery_names_the_https_issuer(provider, platform_vars):
    assert provider.issuer == platform_vars["platform_oidc_issuer"].rstrip("/")
    assert provider.meta["issuer"] == provider.issuer, f"discovery says issuer {provider.meta['issuer']}"


def test_every_endpoint_is_under_the_issuer(provider):
    endpoints = {k: v for k, v in provider.meta.items() if k.endswith("_endpoint") or k == "jwks_uri"}
    outside = {k: v for k, v in endpoints.items() if not v.startswith(provider.issuer + "/")}
    assert endpoints and not outside, f"endpoints not under {provider.issuer}/: {outside}"


def test_forged_forwarded_headers_change_nothing_in_discovery(provider):
    forged_headers = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http", "Forwarded": "host=evil"}
    answer = provider.discovery(forged_headers)
    changed = {k: v for k, v in answer.items() if provider.meta.get(k) != v}
    assert answer == provider.meta, f"forged X-Forwarded-* changed the discovery document: {changed}"


def test_pkce_s256_is_offered(provider):
    offered = provider.meta.get("code_challenge_methods_supported", [])
    assert "S256" in offered, f"code_challenge_methods_supported: {offered}"


# ------------------------------------------------------------------------------ each user's login
def test_id_token_is_signed_by_the_provider_for_the_client(provider, provider_login, exec_api_client, member):
    login = provider_login(member)
    print(f"figure: {member['username']} login (authorize -> form -> redirect) {login.seconds:.2f} s")
    claims = provider.claims(login.tokens["id_token"])
    client_id = exec_api_client.client_id
    assert claims["iss"] == provider.issuer, f"ID token issuer {claims['iss']}"
    assert claims["aud"] in (client_id, [client_id]), f"ID token audience {claims['aud']}, not {client_id}"


def test_id_token_carries_the_username_and_groups(provider, provider_login, claims_names, member):
    claims = provider.claims(provider_login(member).tokens["id_token"])
    got = (claims.get(claims_names["username"]), sorted(claims.get(claims_names["groups"], [])))
    assert got == (member["username"], sorted(member["groups"])), f"ID token {claims_names}: {got}"


def test_access_token_is_for_the_exec_api_with_username_and_groups(provider, provider_login, exec_api_client,
                                                                   claims_names, member):  # fmt: skip
    claims = provider.claims(provider_login(member).tokens["access_token"])
    audience = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    got = (claims.get(claims_names["username"]), sorted(claims.get(claims_names["groups"], [])))
    assert exec_api_client.audience in audience, f"access token audience {audience}"
    assert got == (member["username"], sorted(member["groups"])), f"access token {claims_names}: {got}"


def test_exec_api_accepts_the_users_access_token(provider_login, api_url, ca, member):
    status = api_status(api_url, ca, provider_login(member).tokens["access_token"])
    assert status == 200, f"the exec API answered {member['username']}'s access token with HTTP {status}"


def test_exec_api_refuses_the_id_token_as_an_access_token(provider_login, api_url, ca, member):
    status = api_status(api_url, ca, provider_login(member).tokens["id_token"])
    assert status == 401, f"the exec API answered {member['username']}'s ID token with HTTP {status}"


def test_end_session_makes_the_provider_ask_for_a_password_again(browser, provider, exec_api_client, members):
    user = members[0]
    login = code_flow(browser, provider, exec_api_client, user)
    try:
        page = login.page
        page.goto(provider.end_session_url(exec_api_client, login.tokens["id_token"]))
        page.locator("button[autofocus], button[type=submit], input[type=submit]").first.click()
        page.wait_for_load_state()
        page.goto(provider.authorize_url(exec_api_client, challenge=b64e(os.urandom(32)), state="after-logout"))
        asks = page.locator("#username").count()
        assert asks == 1, f"after end-session {user['username']} was not asked to sign in again: {page.url}"
    finally:
        login.context.close()


# ------------------------------------------------------------------------------ refusals
def test_a_wrong_password_is_refused(browser, provider, exec_api_client, outsider):
    context, page, captured = profile(browser, exec_api_client)
    try:
        page.goto(provider.authorize_url(exec_api_client, challenge="x" * 43, state="s"))
        page.wait_for_selector("#username", timeout=30000)
        submit_form(page, outsider["username"], outsider["password"] + "-wrong")
        assert not captured, f"a wrong password came back to the client: {captured}"
        assert "Invalid username or password" in page.content(), f"no refusal on the form: {page.url}"
    finally:
        context.close()


def test_exec_api_refuses_a_user_outside_the_users_group(browser, provider, exec_api_client, outsider, api_url, ca):
    login = code_flow(browser, provider, exec_api_client, outsider)
    login.context.close()
    status = api_status(api_url, ca, login.tokens["access_token"])
    assert status == 403, f"the exec API answered {outsider['username']} (groups {outsider['groups']}) with {status}"


def test_an_unregistered_redirect_uri_is_refused(browser, provider, exec_api_client):
    context, page, captured = profile(browser, exec_api_client)
    try:
        page.goto(provider.authorize_url(exec_api_client, challenge="x" * 43, state="s",
                                         redirect_uri=exec_api_client.base_url + "/evil"))  # fmt: skip
        assert not captured and "redirect_uri" in page.content(), f"{exec_api_client.base_url}/evil: {page.url}"
    finally:
        context.close()


def test_a_redirect_uri_that_only_starts_like_the_registered_one_is_refused(browser, provider, exec_api_client):
    context, page, captured = profile(browser, exec_api_client)
    try:
        page.goto(provider.authorize_url(exec_api_client, challenge="x" * 43, state="s",
                                         redirect_uri=exec_api_client.redirect_uri + "/../evil"))  # fmt: skip
        assert not captured, f"the provider redirected to a look-alike redirect URI: {captured}"
    finally:
        context.close()


def test_an_authorization_without_code_challenge_is_refused(browser, provider, exec_api_client):
    context, page, captured = profile(browser, exec_api_client)
    try:
        page.goto(provider.authorize_url(exec_api_client, challenge=None, state="s"))
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(captured[-1]).query)) if captured else {}
        refused = q.get("error") == "invalid_request" or (not captured and "PKCE" in page.content())
        assert "code" not in q and refused, f"without a code challenge: {captured or page.url}"
    finally:
        context.close()


def test_exec_api_refuses_a_token_for_another_audience(provider, other_audience, api_url, ca):
    status = api_status(api_url, ca, other_audience)
    assert status == 401, f"the exec API answered a token for {provider.claims(other_audience)['aud']!r}: {status}"


def test_exec_api_refuses_a_token_signed_by_another_key(provider_tokens, api_url, ca):
    status = api_status(api_url, ca, forged(provider_tokens["alice"]))
    assert status == 401, f"the exec API answered alice's claims signed by another key with HTTP {status}"


def test_exec_api_refuses_a_request_without_a_token(api_url, ca, names):
    r = httpx.get(f"{api_url}/db/notebooks", verify=ssl.create_default_context(cafile=ca), trust_env=False, timeout=30)
    assert r.status_code == 401, f"GET /db/notebooks without a token: HTTP {r.status_code}"


def test_exec_api_refuses_an_expired_token(provider, short_lived, api_url, ca):
    """Last: the short-lived token was taken first, so this rarely waits."""
    claims = provider.claims(short_lived["access_token"])
    wait = claims["exp"] + API_LEEWAY + 1 - time.time()
    if wait > 0:
        time.sleep(wait)
    status = api_status(api_url, ca, short_lived["access_token"])
    assert status == 401, f"the exec API answered a token expired {time.time() - claims['exp']:.0f} s ago: {status}"
