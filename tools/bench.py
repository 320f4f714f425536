#!/usr/bin/env python3
"""`make bench`: the platform's speed where users and operators meet it, each figure beside its
anchor measured in the same run, on the demo's all-in-one test host. Figures, not a test.

    bench.py            boot a fresh demo host (tools/demo.py), then measure everything
    bench.py --reuse    measure on the demo host that is up (no fresh converge figure)

Rows (issue #21's table):
- fresh converge of the all-in-one host (boot apart), target <= 240 s;
- no-op re-run of the whole site: the platform's strategy (Mitogen) beside Ansible's own linear
  strategy, the one a user gets without it; target <= 60 s and changed=0;
- the exec API's deployed (systemd) runner beside papermill's CLI as the same user
  (molecule/apps/bench.yml, files/bench_host.py): one at a time, 4 clients, with a ready run;
- a user's server, start -> ready, through the platform's hub beside a vanilla JupyterHub with
  SystemdSpawner on the same host (molecule/apps/files/bench_spawn.py).

Raw figures go to .bench/<UTC time>.json; the table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo

ROOT = demo.ROOT
OUT = ROOT / ".bench"
ANSIBLE = str(ROOT / ".venv/bin/ansible-playbook")
RECAP = re.compile(r"^\S+\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def playbook(path: Path, **env: str) -> dict:
    """Run a playbook on the demo's inventory; its wall time, recap and output (kept on failure)."""
    t0 = time.monotonic()
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")} | env
    argv = [ANSIBLE, "-i", str(demo.DEMO / "hosts.yml"), str(path)]
    p = subprocess.run(argv, cwd=ROOT, text=True, capture_output=True, env=env)
    took = time.monotonic() - t0
    recap = RECAP.search(p.stdout)
    if p.returncode or not recap:
        sys.exit(f"bench: {path.name} failed (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-2000:]}")
    ok, changed, _, _ = map(int, recap.groups())
    return {"seconds": round(took, 1), "ok": ok, "changed": changed, "stdout": p.stdout}


def noop_reruns(converge: Path) -> dict:
    """The whole site again with nothing to do: the platform's strategy, then Ansible's linear."""
    rows = {}
    for name, env in (("platform", {}), ("linear", {"ANSIBLE_STRATEGY": "linear"})):
        r = playbook(converge, **env)
        rows[name] = {k: r[k] for k in ("seconds", "ok", "changed")}
        print(f"no-op re-run, strategy {name:8} {r['seconds']:6.1f} s  ok={r['ok']} changed={r['changed']}", flush=True)
    return rows


def exec_api() -> dict:
    """The exec API's benchmark (molecule/apps/bench.yml) on the demo host; its JSON figures."""
    work = OUT / "exec_api"
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    playbook(ROOT / "molecule/apps/bench.yml", MOLECULE_EPHEMERAL_DIRECTORY=str(work))
    return json.loads((work / "bench.json").read_text())


def ssh_argv() -> list[str]:
    host = yaml.safe_load((demo.DEMO / "hosts.yml").read_text())["all"]["hosts"][demo.HOST]
    return demo.ssh_options(host["ansible_ssh_private_key_file"], host["ansible_host"])


def hub_spawn() -> dict:
    """Server start -> ready through the platform's hub beside a vanilla SystemdSpawner hub on the
    demo host (molecule/apps/files/bench_spawn.py), with alice's token from a browser login."""
    sys.path[:0] = [str(ROOT / "molecule/tests")]
    from browser import chromium
    from hostlib import RULES, browser_hub_token
    from playwright.sync_api import sync_playwright

    *opts, target = ssh_argv()
    address = target.split("@", 1)[1]
    names = {f"{label}.{demo.DOMAIN}": address for label in demo.WEB}
    ca = str(demo.DEMO / ".secrets/platform-ca.crt")
    password = (demo.DEMO / ".secrets" / RULES["user_password_secret"]("alice")).read_text().strip()
    with sync_playwright() as pw:
        browser = chromium(pw, ca, names)
        try:
            token = browser_hub_token(
                browser, f"https://hub.{demo.DOMAIN}", {"username": "alice", "password": password}
            )
        finally:
            browser.close()
    work = OUT / "hub"
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    token_file = work / "token.json"  # alice's hub token: 0600, removed once on the host
    token_file.touch(mode=0o600)
    token_file.write_text(json.dumps({"alice": token}))
    script = ROOT / "molecule/apps/files/bench_spawn.py"
    scp = ["scp", "-q", *opts]
    try:
        subprocess.run([*scp, str(token_file), f"{target}:/root/bench-hub-token.json"], check=True)
    finally:
        token_file.unlink()
    subprocess.run([*scp, str(script), f"{target}:/root/bench_spawn.py"], check=True)
    p = subprocess.run(["ssh", *opts, target, "chmod 0700 /root/bench_spawn.py && /root/bench_spawn.py "
                        "--json /root/bench-spawn.json; rc=$?; rm -f /root/bench-hub-token.json; exit $rc"],
                       text=True, capture_output=True)  # fmt: skip
    print(p.stdout, end="", flush=True)
    if p.returncode:
        sys.exit(f"bench: the hub's spawn benchmark failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    subprocess.run([*scp, f"{target}:/root/bench-spawn.json", str(work / "spawn.json")], check=True)
    return json.loads((work / "spawn.json").read_text())


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def fig(d: dict) -> str:
    return f"{d['per_s']:.2f}/s p50 {d['p50_s']:.2f} s p99 {d['p99_s']:.2f} s fail {d['failures']}"


def limit(d: dict) -> str:
    """What the machine's CPU allows: its CPU seconds per run (API, worker, nginx, PostgreSQL,
    the run, the client) spread over every core."""
    cpu = d.get("host_cpu_s_per_run")
    return f"; {cpu:.2f} CPU-s/run: {d['cpus']} cores allow <= {d['cpus'] / cpu:.1f}/s" if cpu else ""


def ready_parts(e: dict) -> str:
    """Where a ready run's time goes: the API's own submitted -> completed, and the run alone."""
    server, alone = e["api_ready"].get("server_p50_s"), e.get("in_process", {}).get("p50_s")
    if server is None or alone is None:
        return ""
    return f" (API's clock {server:.2f} s, of which the run alone {alone:.2f} s)"


def table(res: dict) -> str:
    rows = [("what", "project", "anchor (same run)", "ratio", "target")]
    if "converge" in res:
        c = res["converge"]
        took = f"{c['converged_s']:.0f} s (+{c['booted_s']:.0f} s boot)"
        rows.append(("fresh converge, all-in-one host", took, "-", "-", "<= 240 s"))
    mine, linear = res["noop"]["platform"], res["noop"]["linear"]
    rows.append(
        (
            "no-op re-run of the whole site",
            f"{mine['seconds']:.0f} s, changed={mine['changed']}",
            f"Ansible's linear: {linear['seconds']:.0f} s",
            ratio(linear["seconds"], mine["seconds"]) + " faster",
            "<= 60 s, changed=0",
        )
    )
    e = res["exec_api"]
    seq, conc, ready = e["api_sequential"], e["api_concurrent"], e["api_ready"]
    pm_seq, pm_conc = e["papermill_sequential"], e["papermill_concurrent"]
    rows += [
        ("exec API, 1 at a time", fig(seq) + limit(seq), "papermill CLI " + fig(pm_seq),
         ratio(seq["per_s"], pm_seq["per_s"]), ">= 3/s, p99 <= 0.5 s"),
        ("exec API, 4 clients", fig(conc) + limit(conc), "papermill CLI " + fig(pm_conc),
         ratio(conc["per_s"], pm_conc["per_s"]), ">= 5/s, p99 <= 1.5 s"),
        ("exec API, with a ready run", f"p50 {ready['p50_s']:.2f} s" + ready_parts(e),
         f"papermill CLI p50 {pm_seq['p50_s']:.2f} s", ratio(pm_seq["p50_s"], ready["p50_s"]) + " faster",
         "p50 <= 0.1 s"),
    ]  # fmt: skip
    hub = res["hub_spawn"]
    mine, vanilla = hub["platform"], hub["vanilla"]
    rows.append(
        (
            "hub: start server -> ready",
            f"median {mine['median_s']:.2f} s ({', '.join(f'{x:.1f}' for x in mine['all_s'])})",
            f"vanilla SystemdSpawner: median {vanilla['median_s']:.2f} s",
            ratio(vanilla["median_s"], mine["median_s"]) + " faster",
            "<= 3 s median",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reuse", action="store_true", help="measure on the demo host that is up")
    a = ap.parse_args()
    res: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count()}
    if a.reuse:
        if not (demo.DEMO / "hosts.yml").exists():
            sys.exit("bench: --reuse needs the demo host: run `make demo` first")
        converge = ROOT / ("site.yml" if demo.KEYCLOAK_ARCHIVE else "molecule/shared/converge.yml")
    else:
        demo.down()
        up = demo.up()
        res["converge"] = {"booted_s": round(up["booted_s"], 1), "converged_s": round(up["converged_s"], 1)}
        converge = Path(up["playbook"])
    res["noop"] = noop_reruns(converge)
    res["exec_api"] = exec_api()
    res["hub_spawn"] = hub_spawn()
    OUT.mkdir(exist_ok=True)
    path = OUT / (res["started"].replace(":", "") + ".json")
    path.write_text(json.dumps(res, indent=2) + "\n")
    print("\n" + table(res) + f"\n\nRaw figures: {path}")


if __name__ == "__main__":
    main()
