"""What the host tests act through: the platform's names, the hub's REST API, a user's kernel.

Everything here talks to the real services of a booted test host, through nginx over HTTPS and
trusting only the install's CA. The platform's names (hub.<domain>, ...) are resolved to the
test host's address inside this process only (`resolve`), so requests and the WebSocket client
reach the same nginx virtual hosts a person's browser would.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests
import websocket

ROOT = Path(__file__).resolve().parents[2]
_NAMES: dict[str, str] = {}
_real_getaddrinfo = socket.getaddrinfo


# The platform's naming rules (valid usernames, secret names), as the roles use them. Loaded by
# path: the module's name, platform, is also the standard library's.
RULES = runpy.run_path(str(ROOT / "filter_plugins/platform.py"))


@dataclass
class Run:
    rc: int
    output: str  # stdout and stderr (failures go to stderr: display_failed_stderr)

    def recap(self, key: str) -> int:
        """The sum of a PLAY RECAP counter (changed, failed) over the hosts."""
        recap = self.output[self.output.rfind("PLAY RECAP") :]
        return sum(int(n) for n in re.findall(rf"\b{key}=(\d+)", recap))


def playbook_runner(inventory_path: Path, playbook: Path, *args: str, root: Path = ROOT):
    """run(**extra_vars) -> Run: the playbook against the scenario's hosts, as a separate
    ansible-playbook run (molecule's idempotence step covers only the whole converge). Under
    `molecule verify` the environment carries molecule's settings; by hand the ones the
    scenarios need are filled in. `root`: another checkout of the repository (an earlier
    release), whose roles and plugins the run uses."""
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    for name, path in (("ROLES_PATH", "roles"), ("LOOKUP_PLUGINS", "lookup_plugins"),
                       ("FILTER_PLUGINS", "filter_plugins"), ("STRATEGY_PLUGINS", "strategy_plugins")):  # fmt: skip
        if root == ROOT:
            env.setdefault(f"ANSIBLE_{name}", str(ROOT / path))
        else:
            env[f"ANSIBLE_{name}"] = str(root / path)
    inventory_dir = inventory_path if inventory_path.is_dir() else inventory_path.parent
    cfg = inventory_dir.parent / "ansible.cfg"  # molecule's, beside the inventory directory
    if cfg.is_file():
        env.setdefault("ANSIBLE_CONFIG", str(cfg))
    binary = str(Path(sys.executable).parent / "ansible-playbook")

    def run(**extra_vars) -> Run:
        cmd = [binary, "-i", str(inventory_path), *args, str(playbook)]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        return Run(out.returncode, out.stdout + out.stderr)

    return run


def _getaddrinfo(host, *args, **kwargs):
    return _real_getaddrinfo(_NAMES.get(host, host), *args, **kwargs)


def resolve(names: dict[str, str]) -> None:
    """Map the platform's names to test-host addresses for this process (requests, websocket)."""
    _NAMES.update(names)
    socket.getaddrinfo = _getaddrinfo


def fetch(url: str, ca: str, **kw) -> requests.Response:
    """One GET from this process, trusting only the install's CA; redirects are not followed."""
    with requests.Session() as http:
        http.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment overrides `verify`
        return http.get(url, verify=ca, timeout=30, allow_redirects=False, **kw)


def until(cond, timeout: float, what: str, step: float = 0.5):
    """Poll cond() until it returns something true; fail with `what` after timeout seconds."""
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def exposure(host, unit: str) -> float:
    """The unit's overall exposure level in `systemd-analyze security` (0 safe .. 10 exposed)."""
    out = host.run(f"systemd-analyze security --no-pager {unit}")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
    assert match, f"systemd-analyze security {unit}: {out.stdout[-500:]} {out.stderr}"
    return float(match.group(1))


def unit_props(host, unit: str, *keys: str) -> dict[str, str]:
    """`systemctl show` properties of a unit on a testinfra host."""
    out = host.check_output(f"systemctl show {unit} -p {','.join(keys)}")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def notebook(cells: list[str], parameters: str | None = None) -> dict:
    """A notebook of code cells; with `parameters`, papermill's parameters cell comes first."""

    def cell(i: int, source: str, tags: list[str]) -> dict:
        return {"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {"tags": tags},
                "outputs": [], "source": source}  # fmt: skip

    first = [cell(0, parameters, ["parameters"])] if parameters is not None else []
    return {
        "cells": first + [cell(i + len(first), c, []) for i, c in enumerate(cells)],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }  # fmt: skip


@dataclass
class Hub:
    """JupyterHub's REST API with one user's API token."""

    url: str  # https://hub.<domain>
    ca: str
    user: str
    token: str
    http: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.http.headers["Authorization"] = f"token {self.token}"
        self.http.verify = self.ca
        self.http.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment overrides `verify`

    def api(self, method: str, path: str, **kw) -> requests.Response:
        return self.http.request(method, f"{self.url}/hub/api{path}", timeout=60, **kw)

    def server(self) -> dict | None:
        r = self.api("GET", f"/users/{self.user}")
        r.raise_for_status()
        return (r.json().get("servers") or {}).get("")

    def start(self, profile: str | None = None, timeout: float = 180) -> None:
        """Start the user's server (if it is not running) and wait until the hub says ready."""
        if (self.server() or {}).get("ready"):
            return
        body = {"profile": profile} if profile else {}
        r = self.api("POST", f"/users/{self.user}/server", json=body)
        assert r.status_code in (201, 202, 400), f"starting {self.user}'s server: HTTP {r.status_code} {r.text}"
        until(lambda: (self.server() or {}).get("ready"), timeout, f"{self.user}'s server to be ready")

    def new_token(self, scopes: list[str] | None, note: str) -> str:
        body: dict = {"note": note, "expires_in": 3600}
        if scopes is not None:
            body["scopes"] = scopes
        r = self.api("POST", f"/users/{self.user}/tokens", json=body)
        assert r.status_code in (200, 201), f"token for {self.user}: HTTP {r.status_code} {r.text}"
        return r.json()["token"]

    def kernel(self) -> Kernel:
        """A fresh Python kernel in the user's own server (their unit, their limits)."""
        r = self.http.post(f"{self.url}/user/{self.user}/api/kernels", json={"name": "python3"}, timeout=60)
        assert r.status_code == 201, f"new kernel for {self.user}: HTTP {r.status_code} {r.text}"
        kid = r.json()["id"]
        ws_url = self.url.replace("https://", "wss://") + f"/user/{self.user}/api/kernels/{kid}/channels"
        return Kernel(self, kid, ws_url)


class KernelError(AssertionError):
    pass


class Kernel:
    """Runs code in a Jupyter kernel over the server's WebSocket (the protocol JupyterLab speaks)."""

    IDLE = 45.0

    def __init__(self, hub: Hub, kid: str, ws_url: str) -> None:
        self.hub, self.kid = hub, kid
        self.session = uuid.uuid4().hex
        # With the same session id, the server replays what the kernel said while disconnected.
        self.ws_url = f"{ws_url}?session_id={self.session}"
        self._connect()

    def _connect(self) -> None:
        self.ws = websocket.create_connection(
            self.ws_url, header=[f"Authorization: token {self.hub.token}"], sslopt={"ca_certs": self.hub.ca}, timeout=20
        )
        self.heard = time.monotonic()

    def _fresh(self) -> None:
        """The server pings every 30 s and closes a WebSocket that answered none for 90 s
        (jupyter_server's WebSocketMixin). This client answers pings only while it reads, so after
        a pause between runs its connection may be closed, and a request sent on it can be lost
        without an error (the close half-done). After IDLE s without reading it connects anew."""
        if time.monotonic() - self.heard > self.IDLE:
            self.ws.shutdown()
            self._connect()

    def _send(self, payload: str) -> None:
        try:
            self.ws.send(payload)
        except (websocket.WebSocketConnectionClosedException, OSError):
            self._connect()  # nginx closes a WebSocket idle for its read timeout
            self.ws.send(payload)

    def _recv(self) -> dict | None:
        """The next message, or None after 20 s of silence (a ping then keeps nginx from closing)."""
        try:
            msg = json.loads(self.ws.recv())
            self.heard = time.monotonic()
            return msg
        except websocket.WebSocketTimeoutException:
            self.ws.ping()
            return None
        except (websocket.WebSocketConnectionClosedException, OSError):
            self._connect()
            return None

    def run(self, code: str, timeout: float = 120) -> str:
        """Execute code; return what it printed. A Python error raises KernelError with its traceback."""
        msg_id = uuid.uuid4().hex
        self._fresh()
        self._send(json.dumps({
            "header": {"msg_id": msg_id, "username": self.hub.user, "session": self.session,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))  # fmt: skip
        out: list[str] = []
        error = None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = self._recv()
            if msg is None or msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "execute_result":
                out.append(content["data"].get("text/plain", "") + "\n")
            elif kind == "error":
                error = "\n".join(content.get("traceback", [])) or f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                if error:
                    raise KernelError(f"{self.hub.user}'s kernel raised:\n{error}\nprinted:\n{''.join(out)}")
                return "".join(out)
        raise KernelError(f"{self.hub.user}'s kernel gave no answer within {timeout} s; printed {''.join(out)!r}")

    def json(self, code: str, timeout: float = 120):
        """Run code whose last printed line is JSON; return it parsed."""
        printed = self.run(code, timeout).strip().splitlines()
        assert printed, f"{self.hub.user}'s kernel printed nothing"
        return json.loads(printed[-1])

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.hub.http.delete(f"{self.hub.url}/user/{self.hub.user}/api/kernels/{self.kid}", timeout=30)


def browser_hub_token(browser, hub_url: str, user: dict) -> str:
    """A user's hub API token, the way a person gets one: log in through the provider's form in a
    real browser (a fresh profile of the session's), then ask the hub's token API from the page
    (session cookie plus XSRF token)."""
    from browser import sign_in

    context = browser.new_context()
    try:
        page = context.new_page()
        sign_in(page, hub_url + "/hub/oauth_login", user)
        page.goto(hub_url + "/hub/home")
        xsrf = page.evaluate("window.jhdata && window.jhdata.xsrf_token")
        assert xsrf, f"no XSRF token on /hub/home after {user['username']} logged in: {page.url}"
        status, text = page.evaluate(
            """async ([url, xsrf]) => {
                 const r = await fetch(url, {method: 'POST', credentials: 'same-origin',
                   headers: {'X-XSRFToken': xsrf, 'Content-Type': 'application/json'},
                   body: JSON.stringify({note: 'host tests', expires_in: 7200})});
                 return [r.status, await r.text()];
               }""",
            [f"{hub_url}/hub/api/users/{user['username']}/tokens", xsrf],
        )
        assert status in (200, 201), f"{user['username']} could not create a token: HTTP {status} {text}"
        return json.loads(text)["token"]
    finally:
        context.close()


def api_client(api_url: str, ca: str, token: str):
    """The exec API's own typed client (exec_api.client) with `token`, trusting only the install's CA."""
    import ssl

    import httpx
    from exec_api.client import ExecApiClient

    http = httpx.Client(base_url=api_url, verify=ssl.create_default_context(cafile=ca), trust_env=False, timeout=300)
    return ExecApiClient(token=token, http=http)
