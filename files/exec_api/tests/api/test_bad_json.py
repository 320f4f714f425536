"""Non-finite numbers and malformed JSON get 4xx (never 5xx) on every route that takes a
JSON body; a non-finite number is refused with 422 naming where it is."""

from __future__ import annotations

from typing import Any

import pytest

from exec_api.main import json_body_error

NON_FINITE = [
    (b'{"parameters": {"x": NaN}}', "body.parameters.x"),
    (b'{"params": {"x": Infinity}, "path": "a.ipynb"}', "body.params.x"),
    (b'{"metadata": {"k": [1, -Infinity]}}', "body.metadata.k.1"),
    (b'{"default_value": 1e999}', "body.default_value"),
    (b'{"validation_rules": {"max": 1E+0400}}', "body.validation_rules.max"),
    (b'{"v": 1' + b"0" * 400 + b".5}", "body.v"),
    (b'[{"param_name": "a", "default_value": 2e400}]', "body.0.default_value"),
    ('{"parameters": {"x": NaN}}'.encode("utf-16-le"), "body.parameters.x"),
    ('{"parameters": {"x": NaN}}'.encode("utf-32"), "body.parameters.x"),
]
LONE_SURROGATES = [
    (b'{"name": "\\ud800"}', "body.name"),
    (b'{"metadata": {"k": "x\xed\xa0\x80"}}', "body.metadata.k"),
    (b'{"metadata": {"\\udfff": 1}}', "body.metadata"),
]
MALFORMED = [
    b"{",
    b'{"a": }',
    b"\xff\xfe",
    b"[" * 100_000,
    b'{"a": 1' + b"1" * 5000 + b"}",  # past Python's int digit limit
]


def _body_routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for path, ops in app.openapi()["paths"].items():
        for method, op in ops.items():
            if "requestBody" in op:
                concrete = path
                for name in ("notebook_id", "param_id", "execution_id"):
                    concrete = concrete.replace("{" + name + "}", "1")
                out.append((method.upper(), concrete))
    return out


def test_every_body_route_is_covered(app_client):
    routes = _body_routes(app_client.app)
    assert len(routes) >= 9, routes  # notebooks, parameters, executions, the legacy three


def _responses(app_client, user, body: str):
    """The same raw body to every route that takes one: (method, path, response)."""
    for method, path in _body_routes(app_client.app):
        r = app_client.request(
            method,
            path,
            headers={**user.headers, "Content-Type": "application/json"},
            content=body,
        )
        yield method, path, r


def _sent_everywhere(app_client, user, body: str):
    """As _responses, each answered with a 422."""
    for method, path, r in _responses(app_client, user, body):
        assert r.status_code == 422, (method, path, r.status_code, r.text)
        yield method, path, r


@pytest.mark.parametrize(("body", "where"), NON_FINITE)
def test_non_finite_number_refused_by_location(app_client, user, body, where):
    for method, path, r in _sent_everywhere(app_client, user, body):
        detail = r.json()["detail"]
        assert detail[0]["msg"] == f"non-finite number at {where}", (method, path, detail)
        assert [str(p) for p in detail[0]["loc"]] == where.split("."), detail


@pytest.mark.parametrize(("body", "where"), LONE_SURROGATES)
def test_lone_surrogate_refused_by_location(app_client, user, body, where):
    for _method, _path, r in _sent_everywhere(app_client, user, body):
        msg = r.json()["detail"][0]["msg"]
        assert msg.startswith("invalid text (lone surrogate)") and msg.endswith(f"at {where}"), msg


@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_json_is_a_client_error(app_client, user, body):
    for method, path, r in _responses(app_client, user, body):
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text[:300])


def test_non_finite_without_content_type_refused(app_client, user):
    # FastAPI reads a body without a content type as JSON: so does the check
    r = app_client.post(
        "/db/executions",
        headers={"Authorization": user.headers["Authorization"]},
        content=b'{"notebook_path": "a.ipynb", "parameters": {"x": NaN}}',
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["msg"] == "non-finite number at body.parameters.x", r.text


def test_finite_numbers_and_text_pass_the_check():
    assert json_body_error(b'{"a": 1e300, "b": -1.5e-400, "c": 12345678901234567890}') is None
    assert json_body_error(b'{"s": "NaN Infinity 1e999", "NaN": "x"}') is None
    assert json_body_error(b'{"n": 1' + b"0" * 250 + b"}") is None  # a big integer is finite
    assert json_body_error(b"not json NaN") is None  # left to the route's own parsing
    assert json_body_error('{"emoji": "\U0001f600", "e": "\\ud83d\\ude00"}'.encode()) is None


def test_finite_run_parameters_still_accepted(app_client, user):
    user.notebook("f.ipynb", "print(x)", params="x = 0.5")
    r = app_client.post(
        "/db/executions",
        headers=user.headers,
        json={"notebook_path": "f.ipynb", "parameters": {"x": 1e300}},
    )
    assert r.status_code in (200, 201, 202), r.text
