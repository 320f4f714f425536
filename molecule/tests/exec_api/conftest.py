"""Fixtures of the exec API's tests: its host (testinfra), its own typed client with each user's
access token from a browser login at the provider, and notebooks written into a user's area."""

from __future__ import annotations

import base64
import json
import ssl

import hostlib
import httpx
import pytest
from exec_api.client import ExecApiClient
from oidc import *  # noqa: F403 - the provider's fixtures (oidc.__all__)


@pytest.fixture(scope="session")
def api_host(group_hosts):
    """The exec API's host (root over SSH)."""
    return group_hosts("exec_api")[0]


@pytest.fixture(scope="session")
def answers() -> dict[str, httpx.Response]:
    """The last response each user's client got: the client's errors carry only the status and
    the detail, a 429's Retry-After is in the response."""
    return {}


@pytest.fixture(scope="session")
def exec_api(api_url, ca, provider_tokens, answers):
    """exec_api("alice") -> the exec API's client with alice's token, through nginx over HTTPS."""
    made: dict[str, ExecApiClient] = {}

    def get(user: str) -> ExecApiClient:
        if user not in made:
            http = httpx.Client(
                base_url=api_url, verify=ssl.create_default_context(cafile=ca), trust_env=False, timeout=120,
                event_hooks={"response": [lambda r, user=user: answers.__setitem__(user, r)]},
            )  # fmt: skip
            made[user] = ExecApiClient(token=provider_tokens[user], http=http)
        return made[user]

    yield get
    for client in made.values():
        client.http.close()


@pytest.fixture(scope="session")
def notebook(api_host):
    """notebook("alice", "probe.ipynb", [cell, ...], "n = 1"): a notebook in alice's area, hers,
    with a parameters cell; written by root, as a user's editor would leave it."""

    def write(owner: str, name: str, cells: list[str], parameters: str = "n = 1") -> str:
        nb = hostlib.notebook(cells, parameters)
        path = f"/home/{owner}/notebooks/{name}"
        data = base64.b64encode(json.dumps(nb).encode()).decode()
        api_host.check_output(f"echo '{data}' | base64 -d > {path} && chown {owner}:{owner} {path}")
        return name

    return write
