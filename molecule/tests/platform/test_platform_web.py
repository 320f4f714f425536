"""The web front: nginx over HTTPS with the install's CA in front of the exec API, asked from
the controller by the public name (resolved to the nginx host in this process only)."""

from __future__ import annotations

import pytest
from hostlib import fetch, resolve


@pytest.fixture(scope="session")
def api(inventory, hostvars, group_hosts) -> str:
    """https://api.<platform_domain>, its name mapped to the nginx host."""
    for group in ("exec_api", "nginx"):
        group_hosts(group)  # skips when the scenario has none
    nginx = inventory["nginx"]["hosts"][0]
    name = f"api.{hostvars[nginx].get('platform_domain', 'platform.test')}"
    resolve({name: hostvars[nginx]["ansible_host"]})
    return name


def test_exec_api_liveness_answers_through_nginx_with_the_ca(api, ca):
    r = fetch(f"https://{api}/health", ca)
    assert r.status_code == 200, f"https://{api}/health: HTTP {r.status_code} {r.text[:300]}"


def test_exec_api_refuses_a_request_without_a_token(api, ca):
    r = fetch(f"https://{api}/db/notebooks", ca)
    assert r.status_code == 401, f"https://{api}/db/notebooks without a token: HTTP {r.status_code} {r.text[:300]}"


def test_https_answers_carry_hsts(api, ca):
    hsts = fetch(f"https://{api}/health", ca).headers.get("strict-transport-security", "")
    assert hsts.startswith("max-age="), f"Strict-Transport-Security: {hsts!r}"


def test_plain_http_redirects_to_https(api, ca):
    r = fetch(f"http://{api}/health", ca)
    assert (r.status_code, r.headers.get("location")) == (301, f"https://{api}/health"), (
        f"http://{api}/health: HTTP {r.status_code} Location {r.headers.get('location')}"
    )
