#!/usr/bin/env python3
"""JupyterHub checked on its own host, as root, through the hub's API on loopback (stdlib only, run
with the hub's Python). Each check prints ``ok: ...`` or stops with ``FAILED: ...``; timings are
``figure: ...``; the last line is ``all checks passed``.

    hub_host_check.py tokens     the server's own token lists the exec API's scope in GET /hub/api/user;
                                 a token made without scopes (by the hub's `jupyterhub token`, and one
                                 that token asks the API for) does not
    hub_host_check.py cookies    every cookie the hub sets on its login pages (through nginx) is Secure
    hub_host_check.py restarts   stop -> start of the user's server ROUNDS times quickly through the hub
                                 API, each one ready (a start always ends)

Input (environment, no secret): HUB_API (http://127.0.0.1:8081/hub/api), HUB_PUBLIC (https://hub.<domain>),
HUB_USER, HUB_SCOPE, HUB_PROFILE, HUB_ROUNDS, HUB_CONFIG (the hub's jupyterhub_config.py), HUB_ENV_FILE (its
environment file), HUB_VENV. Tokens never leave this process (none is printed).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request

API = os.environ.get("HUB_API", "http://127.0.0.1:8081/hub/api")
USER = os.environ.get("HUB_USER", "alice")
SCOPE = os.environ.get("HUB_SCOPE", "custom:exec-api:run")


def active_unit() -> str:
    """The user's running server unit: jupyter-<user>-singleuser, or with a number when systemd kept that
    name loaded (see the hub's PlatformSpawner)."""
    out = subprocess.run(
        ["systemctl", "list-units", "--type=service", "--state=active", "--plain", "--no-legend",
         f"jupyter-{USER}-singleuser*"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    if not out:
        fail(f"no active server unit of {USER}")
    return out[0].removesuffix(".service")


def fail(msg: str) -> None:
    print(f"FAILED: {msg}", flush=True)
    sys.exit(1)


def check(cond: bool, msg: str) -> None:
    if not cond:
        fail(msg)
    print(f"ok: {msg}", flush=True)


def api(token: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    req = urllib.request.Request(API + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        text, status = e.read(), e.code
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, None


def hub_token() -> str:
    """A token for the user made by the hub's own command line (no scopes asked: the `token` role)."""
    venv, config, env_file = os.environ["HUB_VENV"], os.environ["HUB_CONFIG"], os.environ["HUB_ENV_FILE"]
    out = subprocess.run(
        ["systemd-run", "--quiet", "--wait", "--pipe", "--collect", f"--property=EnvironmentFile={env_file}",
         "--property=WorkingDirectory=/var/lib/jupyterhub", f"{venv}/bin/jupyterhub", "token",
         f"--JupyterHub.config_file={config}", USER],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        fail(f"`jupyterhub token {USER}` failed (exit {out.returncode}): {out.stderr[-800:]}")
    return lines[-1].strip()


def server_token() -> str:
    """The server's $JUPYTERHUB_API_TOKEN, from the environment file SystemdSpawner wrote (root 0400)."""
    unit = active_unit()
    path = f"/run/{unit}/{unit}.env"
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            if key == "JUPYTERHUB_API_TOKEN":
                return shlex.split(value)[0]
    fail(f"no JUPYTERHUB_API_TOKEN in {path}")
    return ""


def scopes_of(token: str) -> list[str]:
    status, me = api(token, "GET", "/user")
    if status != 200 or not me:
        fail(f"GET /hub/api/user: HTTP {status}")
    return me.get("scopes", [])


def tokens() -> None:
    mine = scopes_of(server_token())
    check(SCOPE in mine, f"{USER}'s server token lists {SCOPE} in GET /hub/api/user (scopes: {mine})")
    plain = hub_token()
    theirs = scopes_of(plain)
    check(
        SCOPE not in theirs and not any(s.startswith("custom:") for s in theirs),
        f"a token made without scopes (`jupyterhub token {USER}`) does not ({len(theirs)} scopes, none custom)",
    )
    status, made = api(plain, "POST", f"/users/{USER}/tokens", {"note": "host check, no scopes", "expires_in": 600})
    if status not in (200, 201) or not made:
        fail(f"creating a token without scopes: HTTP {status} {made}")
    theirs = scopes_of(made["token"])
    check(SCOPE not in theirs, f"nor one {USER} creates through the API without scopes (scopes: {theirs})")
    status, made = api(plain, "POST", f"/users/{USER}/tokens", {"note": "host check, exec API", "expires_in": 600,
                                                               "scopes": [SCOPE]})  # fmt: skip
    check(status in (200, 201) and SCOPE in scopes_of(made["token"]),
          f"{USER} may still ask for it explicitly, being a user (HTTP {status})")  # fmt: skip


def cookies() -> None:
    public = os.environ["HUB_PUBLIC"]

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    seen = []
    for path in ("/hub/login", "/hub/oauth_login"):
        try:
            r = opener.open(public + path, timeout=30)
            headers = r.headers
        except urllib.error.HTTPError as e:  # the redirect to the provider
            headers = e.headers
        for value in headers.get_all("Set-Cookie") or []:
            name = value.split("=", 1)[0]
            attrs = [a.strip().lower() for a in value.split(";")[1:]]
            seen.append(name)
            check("secure" in attrs, f"{path} sets {name} with Secure ({'; '.join(attrs)})")
    check(len(seen) >= 2, f"the login pages set cookies to check: {seen}")


def server(token: str) -> dict | None:
    status, model = api(token, "GET", f"/users/{USER}")
    if status != 200 or model is None:
        fail(f"GET /users/{USER}: HTTP {status}")
    return (model.get("servers") or {}).get("")


def wait(cond, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    fail(f"timed out after {timeout} s waiting for {what}")


def restarts() -> None:
    token = hub_token()
    rounds, profile = int(os.environ.get("HUB_ROUNDS", "10")), os.environ.get("HUB_PROFILE", "minimal")
    times = []
    for i in range(1, rounds + 1):
        t0 = time.monotonic()
        status, _ = api(token, "DELETE", f"/users/{USER}/server")
        if status not in (202, 204, 400):
            fail(f"round {i}: stopping {USER}'s server: HTTP {status}")
        wait(lambda: server(token) is None, 60, f"round {i}: {USER}'s server to stop")
        status, body = api(token, "POST", f"/users/{USER}/server", {"profile": profile})
        if status not in (201, 202):
            fail(f"round {i}: starting {USER}'s server: HTTP {status} {body}")

        def ready(i=i):
            s = server(token)
            if s is None:
                fail(f"round {i}: {USER}'s server is gone while starting (the spawn failed: see the hub's journal)")
            return s.get("ready")

        wait(ready, 60, f"round {i}: {USER}'s server to be ready")
        times.append(time.monotonic() - t0)
    check(True, f"{rounds} stop -> start rounds of {USER}'s server, each one ready")
    print(f"figure: stop -> start -> ready: {', '.join(f'{t:.1f}' for t in times)} s", flush=True)


{"tokens": tokens, "cookies": cookies, "restarts": restarts}[sys.argv[1]]()
print("all checks passed", flush=True)
