"""What the Superset tests expect and act through: the names the superset role documents
(roles/superset/README.md, its defaults), and a person's Superset session.
"""

from __future__ import annotations

import time

import requests
from browser import sign_in

ADMIN_GROUP = "platform-admins"  # superset_admin_group (its default; the inventory does not set it)
USERS_GROUP = "platform-users"  # superset_users_group
DASHBOARD = "notebook-executions"  # the provisioned dashboard's slug
CHARTS = (
    "Runs per day",
    "Success rate",
    "Duration by notebook",
    "Latest failures",
    "Resources by notebook and user",
    "Runs by schedule",
)
# alice's two runs through the exec API: notebook name -> the status the run must end with.
RUNS = {"superset-check-ok": "succeeded", "superset-check-fail": "failed"}
CELLS = {"succeeded": "print(n * 2)", "failed": "raise RuntimeError('superset check: this run fails on purpose')"}


class SupersetSession:
    """One person logged in to Superset in a fresh browser profile, through the provider's form;
    `get` calls Superset's REST API with that profile's cookies."""

    def __init__(self, browser, url: str, ca: str, person: dict) -> None:
        self.url, self.person = url, person
        self.context = browser.new_context()
        self.page = self.context.new_page()
        start = time.monotonic()
        sign_in(self.page, f"{url}/login/oidc", person)
        self.seconds = time.monotonic() - start
        self.http = requests.Session()
        self.http.verify = ca
        self.http.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment overrides `verify`
        for c in self.context.cookies(url):
            self.http.cookies.set(c["name"], c["value"], domain=c["domain"], path=c["path"])

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.url + path, timeout=60, allow_redirects=False)

    def post(self, path: str, body: dict) -> requests.Response:
        """A JSON POST as Superset's pages send it: with the session's CSRF token."""
        csrf = self.get("/api/v1/security/csrf_token/")
        assert csrf.status_code == 200, f"{self.who}: no CSRF token (HTTP {csrf.status_code})"
        headers = {"X-CSRFToken": csrf.json()["result"], "Referer": self.url + "/"}
        return self.http.post(self.url + path, json=body, headers=headers, timeout=120, allow_redirects=False)

    @property
    def who(self) -> str:
        return self.person["username"]

    def roles(self) -> list[str] | None:
        """The session's Superset roles, None without a session."""
        r = self.get("/api/v1/me/roles/")
        return sorted(r.json()["result"].get("roles", {})) if r.status_code == 200 else None

    def close(self) -> None:
        self.context.close()
        self.http.close()
