"""Fixtures of the analytics database's tests: the people (alice in team-a, bob in no group) and
the exec API's client as alice (the provider's host, the issuer and Superset's address are the
root conftest's; Superset sessions are Superset's tests' own SupersetSession)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from analyticslib import GROUP
from hostlib import api_client

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
def alice_api(hubs, api_url, ca):
    """alice's exec API client, with a hub token of hers that carries the exec API's scope."""
    with api_client(api_url, ca, hubs["alice"].new_token(["custom:exec-api:run"], "analytics tests")) as client:
        yield client
