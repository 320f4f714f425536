"""Fixtures of the analytics database's tests: the people (alice in team-a, bob in no group), the
provider's host (to take a group away), the exec API's client as alice, and Superset sessions
through the provider's login (Superset's tests' own SupersetSession)."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import httpx
import pytest
from analyticslib import GROUP
from exec_api.client import ExecApiClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "superset"))  # supersetlib


@pytest.fixture(scope="session")
def team_member(users) -> dict:
    found = [u for u in users.values() if GROUP in u["groups"]]
    if not found:
        pytest.skip(f"platform_users has nobody in {GROUP}")
    return found[0]


@pytest.fixture(scope="session")
def outsider_user(users, team_member) -> dict:
    return next(u for name, u in users.items() if name == "bob" and GROUP not in u["groups"])


@pytest.fixture(scope="session")
def provider_host(group_hosts):
    return group_hosts("oidc_test_provider")[0]


@pytest.fixture(scope="session")
def issuer(platform_vars) -> str:
    return platform_vars["platform_oidc_issuer"].rstrip("/")


@pytest.fixture(scope="session")
def superset_url(domain, names) -> str:
    return f"https://superset.{domain}"


@pytest.fixture(scope="session")
def alice_api(hubs, api_url, ca):
    """alice's exec API client, with a hub token of hers that carries the exec API's scope."""
    token = hubs["alice"].new_token(["custom:exec-api:run"], "analytics tests")
    http = httpx.Client(base_url=api_url, verify=ssl.create_default_context(cafile=ca), trust_env=False, timeout=120)
    with ExecApiClient(token=token, http=http) as client:
        yield client
