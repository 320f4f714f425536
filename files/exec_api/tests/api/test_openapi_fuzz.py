"""schemathesis against the app's own OpenAPI: no request may produce a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from conftest import IdP
from hypothesis import HealthCheck, settings

schemathesis.experimental.OPEN_API_3_1.enable()
_state: dict = {}


@pytest.fixture(scope="module")
def fuzz_app(app_client, make_user_module):
    _state["client"] = app_client
    return app_client.app


@pytest.fixture(scope="module")
def make_user_module(idp, env):
    from conftest import UserCtx

    u = UserCtx("fuzzer", idp, env)
    u.notebook("p.ipynb", "print(a)", params="a = 1\nb = 'x'")
    _state["user"] = u
    return u


schema = schemathesis.from_pytest_fixture("fuzz_schema")


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_app):
    import os

    only = os.environ.get("EXEC_API_FUZZ_ENDPOINT")
    return schemathesis.from_asgi("/openapi.json", fuzz_app, endpoint=only)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case):
    user = _state["user"]
    idp: IdP = user.idp
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {idp.token(user.name)}"}
    if case.path in ("/execute", "/run-notebook", "/execute-notebook") and isinstance(
        case.body, dict
    ):
        case.body["wait"] = False
    # Sent through the module's running app (one app, one worker), not a fresh client per
    # call: the check is the same as schemathesis' not_a_server_error.
    kw = case.as_requests_kwargs(base_url="http://testserver")
    client = _state["client"]
    data = kw.pop("data", None)
    response = client.request(
        kw.pop("method"),
        kw.pop("url"),
        headers=kw.get("headers"),
        params=kw.get("params"),
        cookies=kw.get("cookies"),
        json=kw.get("json"),
        content=data,
    )
    assert response.status_code < 500, (
        case.method,
        case.formatted_path,
        case.body,
        response.status_code,
        response.text[:500],
    )
