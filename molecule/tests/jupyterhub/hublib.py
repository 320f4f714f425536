"""What the JupyterHub tests act through besides hostlib: a person's login to the hub in the browser,
the hub's REST API from that browser's page (its session cookie and XSRF token, as the hub's own
pages call it), and reading a user's server unit on the hub's host.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass, field

from browser import sign_in

# The account names the hub accepts (its error message states the rule; roles/platform_accounts).


@dataclass
class HubLogin:
    """One browser profile logged in to the hub: its page, the seconds from the hub's login through
    the provider's form and back, and the last status of each path the browser loaded."""

    context: object
    page: object
    seconds: float
    statuses: dict[str, int] = field(default_factory=dict)

    def api(self, hub_url: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
        """The hub's REST API from the page: its session cookie and the XSRF token of /hub/home."""
        self.page.goto(f"{hub_url}/hub/home")
        xsrf = self.page.evaluate("window.jhdata && window.jhdata.xsrf_token")
        assert xsrf, f"no XSRF token on /hub/home: {self.page.url}"
        status, text = self.page.evaluate(
            """async ([url, method, xsrf, body]) => {
                 const r = await fetch(url, {method, body, credentials: 'same-origin',
                                             headers: {'X-XSRFToken': xsrf, 'Content-Type': 'application/json'}});
                 return [r.status, await r.text()];
               }""",
            [f"{hub_url}/hub/api{path}", method, xsrf, json.dumps(body) if body is not None else None],
        )
        try:
            return status, json.loads(text)
        except ValueError:
            return status, None

    def offered_profiles(self, hub_url: str) -> list[str]:
        """The profiles the spawn form offers, in its order."""
        self.page.goto(f"{hub_url}/hub/spawn")
        radios = self.page.locator("input[name=profile]")
        return [radios.nth(i).get_attribute("value") for i in range(radios.count())]


def hub_login(browser, hub_url: str, user: dict) -> HubLogin:
    """A fresh browser profile: the hub's login, the provider's form, back to the hub."""
    context = browser.new_context()
    page = context.new_page()
    login = HubLogin(context, page, 0.0)
    context.on("response", lambda r, login=login: login.statuses.__setitem__(urllib.parse.urlsplit(r.url).path,
                                                                              r.status))  # fmt: skip
    t0 = time.monotonic()
    sign_in(page, f"{hub_url}/hub/oauth_login", user)
    login.seconds = time.monotonic() - t0
    return login


def server_unit(host, user: str) -> str:
    """The user's running server unit: jupyter-<user>-singleuser, or that name with a number when
    systemd kept the plain one loaded (the hub's PlatformSpawner)."""
    out = host.check_output(
        f"systemctl list-units --type=service --state=active --plain --no-legend 'jupyter-{user}-singleuser*'"
    )
    units = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert len(units) == 1, f"{user}'s running server units: {units}"
    return units[0]


def to_bytes(size: str) -> int:
    """A size as the role's profiles write it (2G, 512M) in bytes, as systemd shows MemoryMax."""
    units = {"K": 1, "M": 2, "G": 3, "T": 4}
    size = str(size).strip().upper().removesuffix("B")
    if size[-1:] in units:
        return int(float(size[:-1]) * 1024 ** units[size[-1]])
    return int(size)
