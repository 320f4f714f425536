"""/db/notifications over HTTP: a user subscribes a webhook (its secret shown once) to their own
notebook; bad targets and another user's notebook are refused naming the field, nothing stored;
deliveries are listed for the owner only."""

from __future__ import annotations

import psycopg
import pytest

from exec_api.worker import _psycopg_dsn


def _count(db_url: str, username: str) -> int:
    with psycopg.connect(_psycopg_dsn(db_url)) as c:
        row = c.execute(
            "SELECT count(*) FROM notification_subscriptions WHERE username = %s", (username,)
        ).fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def nid(app_client, user) -> int:
    user.notebook("n.ipynb", "print(1)")
    r = app_client.post(
        "/db/notebooks", headers=user.headers, json={"name": "n", "file_path": "n.ipynb"}
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_subscribe_read_list_deliveries_delete(app_client, user, nid):
    r = app_client.post(
        "/db/notifications",
        headers=user.headers,
        json={"kind": "webhook", "target": "https://1.1.1.1/hook", "notebook_id": nid},
    )
    assert r.status_code == 201, r.text
    sub = r.json()
    assert len(sub["secret"]) >= 40 and sub["username"] == user.name and sub["on_failure"] is True
    got = app_client.get(f"/db/notifications/{sub['id']}", headers=user.headers).json()
    assert "secret" not in got and got["target"] == "https://1.1.1.1/hook"
    assert [s["id"] for s in app_client.get("/db/notifications", headers=user.headers).json()] == [
        sub["id"]
    ]
    assert (
        app_client.get(f"/db/notifications/{sub['id']}/deliveries", headers=user.headers).json()
        == []
    )
    assert (
        app_client.delete(f"/db/notifications/{sub['id']}", headers=user.headers).status_code == 204
    )
    assert app_client.get(f"/db/notifications/{sub['id']}", headers=user.headers).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "webhook", "target": "http://127.0.0.1:5432/"}, "target"),
        ({"kind": "webhook", "target": "http://169.254.169.254/latest"}, "target"),
        ({"kind": "webhook", "target": "file:///etc/passwd"}, "target"),
        ({"kind": "email", "target": "me@example.org"}, "kind"),  # no relay in these tests
    ],
)
def test_bad_targets_are_named_and_nothing_is_stored(app_client, user, db_url, body, field):
    r = app_client.post("/db/notifications", headers=user.headers, json=body)
    assert r.status_code == 422 and r.json()["detail"]["field"] == field, r.text
    assert _count(db_url, user.name) == 0


def test_another_users_notebook_and_subscription_are_not_found(
    app_client, user, make_user, nid, db_url
):
    bob = make_user()
    r = app_client.post(
        "/db/notifications",
        headers=bob.headers,
        json={"kind": "webhook", "target": "https://1.1.1.1/h", "notebook_id": nid},
    )
    assert r.status_code == 404 and _count(db_url, bob.name) == 0
    sid = app_client.post(
        "/db/notifications",
        headers=user.headers,
        json={"kind": "webhook", "target": "https://1.1.1.1/h"},
    ).json()["id"]
    for method, path in [("GET", ""), ("DELETE", ""), ("GET", "/deliveries")]:
        assert (
            app_client.request(
                method, f"/db/notifications/{sid}{path}", headers=bob.headers
            ).status_code
            == 404
        )
    assert app_client.get("/db/notifications", headers=bob.headers).json() == []
