#!/opt/jupyterhub/venv/bin/python
"""Server start -> ready: the platform's hub beside a vanilla JupyterHub with SystemdSpawner, on
the same host, for the same user, with the same user environment, in the same run.

Not a test: prints figures (and writes them as JSON with --json). Run as root on the hub's host
by tools/bench.py (`make bench`), with alice's hub API token (from a browser login) in a file.

- platform: the role's hub (PlatformSpawner: profiles, limits, sandboxing), its REST API on the
  hub's own port, started as the spawn page does (POST /users/alice/server);
- vanilla: `jupyterhub` from the same venv, spawner `systemdspawner.SystemdSpawner` with nothing
  but the user environment's jupyterhub-singleuser, its own proxy, SQLite, a service token; run
  as a transient unit and removed at the end.
Rounds alternate between the two so that load on the machine falls on both alike.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import requests

USER = "alice"
HOME = Path("/opt/jupyterhub")
VANILLA = Path("/root/bench-vanilla-hub")
VANILLA_UNIT = "bench-vanilla-hub"
VANILLA_CONFIG = """
c.JupyterHub.bind_url = "http://127.0.0.1:18000"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:18081"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:18001"
c.ConfigurableHTTPProxy.command = ["/usr/bin/configurable-http-proxy"]
c.JupyterHub.db_url = "sqlite:///{dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{dir}/cookie_secret"
c.JupyterHub.authenticator_class = "null"
c.JupyterHub.spawner_class = "systemdspawner.SystemdSpawner"
c.SystemdSpawner.unit_name_template = "bench-vanilla-{{USERNAME}}"
c.SystemdSpawner.extra_paths = ["{user_venv}/bin"]
c.Spawner.cmd = ["{user_venv}/bin/jupyterhub-singleuser"]
c.JupyterHub.services = [{{"name": "bench", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "bench", "scopes": ["admin:users", "admin:servers"], "services": ["bench"]}}]
"""


class HubApi:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {token}"

    def server(self) -> dict | None:
        r = self.http.get(f"{self.url}/users/{USER}", timeout=30)
        r.raise_for_status()
        return (r.json().get("servers") or {}).get("")

    def wait(self, what: str, done, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise SystemExit(f"bench_spawn: {what} within {timeout:.0f} s ({self.url})")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.server() is not None:
            self.http.delete(f"{self.url}/users/{USER}/server", timeout=30)
            self.wait(f"{USER}'s server to stop", lambda: self.server() is None)

    def start(self) -> float:
        """Seconds from the start request to the hub saying ready (polled every 0.1 s)."""
        t0 = time.monotonic()
        r = self.http.post(f"{self.url}/users/{USER}/server", json={}, timeout=60)
        if r.status_code not in (201, 202):
            raise SystemExit(f"bench_spawn: starting {USER}'s server at {self.url}: HTTP {r.status_code} {r.text}")

        def ready() -> bool:
            server = self.server()
            if server is None:
                raise SystemExit(f"bench_spawn: {USER}'s server at {self.url} failed to start (the hub's journal)")
            return bool(server.get("ready"))

        self.wait(f"{USER}'s server to be ready", ready)
        return time.monotonic() - t0


def vanilla_up() -> HubApi:
    token = secrets.token_hex(32)
    shutil.rmtree(VANILLA, ignore_errors=True)
    VANILLA.mkdir(mode=0o700)
    (VANILLA / "jupyterhub_config.py").write_text(
        VANILLA_CONFIG.format(dir=VANILLA, user_venv=HOME / "user-venv", token=token)
    )
    subprocess.run(["systemd-run", "--quiet", f"--unit={VANILLA_UNIT}", f"--working-directory={VANILLA}",
                    str(HOME / "venv/bin/jupyterhub"), "-f", str(VANILLA / "jupyterhub_config.py")],
                   check=True)  # fmt: skip
    api = HubApi("http://127.0.0.1:18081/hub/api", token)

    def answers() -> bool:
        try:
            return api.http.get(f"{api.url}/", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    api.wait("the vanilla hub to answer", answers, timeout=60)
    r = api.http.post(f"{api.url}/users/{USER}", timeout=30)
    if r.status_code not in (201, 409):
        raise SystemExit(f"bench_spawn: creating {USER} in the vanilla hub: HTTP {r.status_code} {r.text}")
    return api


def vanilla_down(api: HubApi | None) -> None:
    if api is not None:
        try:
            api.stop()
        except (requests.RequestException, SystemExit):
            subprocess.run(["systemctl", "stop", f"bench-vanilla-{USER}"], check=False)
    subprocess.run(["systemctl", "stop", VANILLA_UNIT], check=False)
    subprocess.run(["systemctl", "reset-failed", VANILLA_UNIT, f"bench-vanilla-{USER}"], check=False,
                   capture_output=True)  # fmt: skip
    shutil.rmtree(VANILLA, ignore_errors=True)


def summary(xs: list[float]) -> dict:
    return {"rounds": len(xs), "median_s": statistics.median(xs), "min_s": min(xs), "max_s": max(xs),
            "all_s": [round(x, 3) for x in xs]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--token-file", default="/root/bench-hub-token.json")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    platform = HubApi("http://127.0.0.1:8081/hub/api", json.loads(Path(a.token_file).read_text())[USER])
    vanilla = None
    times: dict[str, list[float]] = {"platform": [], "vanilla": []}
    try:
        vanilla = vanilla_up()
        hubs = {"platform": platform, "vanilla": vanilla}
        for hub in hubs.values():
            hub.stop()
        hubs["platform"].start(), hubs["platform"].stop()  # warm-up: imports in the page cache, user's home
        hubs["vanilla"].start(), hubs["vanilla"].stop()
        for _ in range(a.rounds):
            for name, hub in hubs.items():
                times[name].append(hub.start())
                hub.stop()
                print(f"{name:8} start -> ready {times[name][-1]:.2f} s", flush=True)
    finally:
        vanilla_down(vanilla)
    results = {name: summary(xs) for name, xs in times.items()}
    print(json.dumps(results))
    if a.json:
        Path(a.json).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
