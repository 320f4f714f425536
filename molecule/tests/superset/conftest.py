"""Fixtures of the Superset tests: its host and the provider's (testinfra), the people of the
inventory by what their groups make them in Superset, their Superset sessions (a browser login
through the provider's form, then Superset's REST API with that browser's cookies, as Superset's
own pages call it), executions alice makes through the exec API, and the provisioned dashboard
loaded in the browser.

Expected values come from the inventory (platform_users and their groups) and the superset
role's documented defaults (roles/superset/README.md): the admin group platform-admins maps to
Admin, the users group platform-users to Gamma, anyone else is refused.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import time
from pathlib import Path

import httpx
import pytest
from exec_api.client import ExecApiClient
from hostlib import notebook
from oidc import *  # noqa: F403 - the provider's fixtures (oidc.__all__): domain, users, provider_tokens, ...
from supersetlib import ADMIN_GROUP, CELLS, DASHBOARD, RUNS, USERS_GROUP, SupersetSession


@pytest.fixture(scope="session")
def superset_host(group_hosts):
    return group_hosts("superset")[0]


@pytest.fixture(scope="session")
def nginx_host(group_hosts):
    return group_hosts("nginx")[0]


@pytest.fixture(scope="session")
def probe_user(superset_host, nginx_host):
    """An unprivileged local account on Superset's and nginx's hosts, as alice is (she has a shell)."""
    for host in (superset_host, nginx_host):
        host.check_output("id probe || useradd --no-create-home --shell /bin/sh probe")
    return "probe"


def _person(users: dict, want: str, refuse: tuple[str, ...] = ()) -> dict:
    found = [u for u in users.values() if want in u["groups"] and not set(refuse) & set(u["groups"])]
    if not found:
        pytest.skip(f"platform_users has nobody in {want}" + (f" and not in {refuse}" if refuse else ""))
    return found[0]


@pytest.fixture(scope="session")
def admin_group() -> str:
    return ADMIN_GROUP


@pytest.fixture(scope="session")
def admin(users) -> dict:
    """A member of the admin group (carol)."""
    return _person(users, ADMIN_GROUP)


@pytest.fixture(scope="session")
def member(users) -> dict:
    """A member of the users group only (alice)."""
    return _person(users, USERS_GROUP, refuse=(ADMIN_GROUP,))


@pytest.fixture(scope="session")
def superset_login(browser, superset_url, ca):
    """superset_login(person) -> a fresh SupersetSession (closed at the end)."""
    made: list[SupersetSession] = []

    def login(person: dict) -> SupersetSession:
        made.append(SupersetSession(browser, superset_url, ca, person))
        print(f"{person['username']} login to Superset (start -> form -> back): {made[-1].seconds:.1f} s")
        return made[-1]

    yield login
    for s in made:
        s.close()


@pytest.fixture(scope="session")
def admin_session(superset_login, admin) -> SupersetSession:
    return superset_login(admin)


@pytest.fixture(scope="session")
def member_session(superset_login, member) -> SupersetSession:
    return superset_login(member)


@pytest.fixture(scope="session")
def executions(superset_host, member, provider_tokens, api_url, ca) -> dict[str, dict]:
    """The member runs one notebook that succeeds and one that fails through the exec API (its own
    client, their token from a browser login): notebook name -> the finished execution."""
    user = member["username"]
    http = httpx.Client(base_url=api_url, verify=ssl.create_default_context(cafile=ca), trust_env=False, timeout=300)
    done = {}
    with ExecApiClient(token=provider_tokens[user], http=http) as api:
        mine = {nb.name: nb.id for nb in api.notebooks()}
        for name, status in RUNS.items():
            path = f"/home/{user}/notebooks/{name}.ipynb"
            data = base64.b64encode(json.dumps(notebook([CELLS[status]], parameters="n = 1")).encode()).decode()
            superset_host.check_output(f"echo {data} | base64 -d > {path} && chown {user}:{user} {path}")
            nid = mine.get(name) or api.register_notebook(f"{name}.ipynb", name=name).id
            ex = api.wait(api.run(notebook_id=nid, parameters={"n": 21}).id, timeout=300, poll=0.5)
            done[name] = ex.model_dump(mode="json")
    http.close()
    return done


@pytest.fixture(scope="session")
def dashboard_page(admin_session, executions, tmp_path_factory):
    """The executions dashboard in the admin's browser, every chart drawn with alice's runs in it
    (its load time printed, a screenshot kept)."""
    page = admin_session.context.new_page()
    start = time.monotonic()
    page.goto(f"{admin_session.url}/superset/dashboard/{DASHBOARD}/")
    for name in RUNS:
        page.get_by_text(name, exact=False).first.wait_for(timeout=120000)
    page.locator(".header-line, .big-number-total, .superset-legacy-chart-big-number").first.wait_for(timeout=60000)
    print(f"dashboard load time in the browser: {time.monotonic() - start:.1f} s (until both notebooks show)")
    out = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY") or tmp_path_factory.mktemp("superset"))
    page.screenshot(path=str(out / "superset-dashboard.png"), full_page=True)
    print(f"screenshot: {out / 'superset-dashboard.png'}")
    return page
