#!/opt/exec-api/venv/bin/python
"""Benchmark of the deployed exec API on its booted host, beside papermill's CLI in the same run.

Not a test: prints figures. Run by `molecule side-effect -s apps` (bench.yml) after a
converge; it uses alice's token from the identity provider (/root/e2e-tokens.json, from bench.yml).

Both sides run the same trivial notebook as the Unix user alice:
- the exec API through nginx over HTTPS: each run is forked by alice's warm runner, a transient
  systemd unit as alice with the run limits (the production path: launcher on her first run,
  then a run process and a fresh kernel per run), submitted with `wait=true` so the figure is
  submit -> succeeded as a client sees it;
- papermill's CLI (`runuser -u alice -- papermill in out -p n 1`), the same venv's papermill.
Each at concurrency 1 (latency) and at the configured concurrency (throughput). The API also
"with a ready run": one run at a time, each after alice's warm runner has a kernel forked ahead
and up, as when a user's runs are not back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx

API = os.environ.get("BENCH_API", "https://api.platform.test")
CA = os.environ.get("BENCH_CA", "/root/platform-ca.crt")
USER = "alice"
AREA = f"/home/{USER}/notebooks"
PAPERMILL = "/opt/exec-api/venv/bin/papermill"


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def host_cpu() -> float:
    """CPU seconds the machine has spent (every process: the API, its worker, nginx, PostgreSQL,
    the runs, and this client), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields[:3]) + sum(fields[5:8])  # user nice system, irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def costed(name: str, runs, *args) -> dict:
    """report() of runs(*args), with the machine's CPU seconds per run and the rate they allow."""
    c0 = host_cpu()
    lat, wall, fails = runs(*args)
    cpu = (host_cpu() - c0) / max(1, len(lat))
    r = report(name, lat, wall, fails) | {"host_cpu_s_per_run": cpu, "cpus": os.cpu_count()}
    print(f"{'':44} machine CPU per run {cpu:.3f} s: {os.cpu_count()} cores allow at most "
          f"{os.cpu_count() / cpu:.1f}/s", flush=True)  # fmt: skip
    return r


def report(name: str, lat: list[float], wall: float, failures: int) -> dict:
    r = {"runs": len(lat), "failures": failures, "per_s": len(lat) / wall if wall else 0.0,
         "p50_s": statistics.median(lat), "p99_s": pct(lat, 99)}  # fmt: skip
    print(f"{name:44} runs={r['runs']:4} failures={failures:3} {r['per_s']:6.2f}/s "
          f"p50={r['p50_s']:.3f}s p99={r['p99_s']:.3f}s", flush=True)  # fmt: skip
    return r


def notebook() -> None:
    nb = {
        "cells": [
            {"cell_type": "code", "execution_count": None, "id": "p", "metadata": {"tags": ["parameters"]},
             "outputs": [], "source": "n = 1"},
            {"cell_type": "code", "execution_count": None, "id": "c", "metadata": {}, "outputs": [],
             "source": "x = n + 1"},
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }  # fmt: skip
    path = f"{AREA}/bench.ipynb"
    with open(path, "w") as f:
        json.dump(nb, f)
    subprocess.run(["chown", f"{USER}:{USER}", path], check=True)


SERVER: list[float] = []  # submitted -> completed by the API's own timestamps, of every API run


def api_runs(c: httpx.Client, runs: int, concurrency: int) -> tuple[list[float], float, int]:
    def one(_: int) -> tuple[float, bool]:
        t0 = time.monotonic()
        r = c.post("/execute", json={"path": "bench.ipynb", "params": {"n": 1}, "wait": True, "timeout_seconds": 120})
        ex = r.json().get("execution", {}) if r.status_code == 200 else {}
        if ex.get("completed_at"):
            done, sent = (datetime.fromisoformat(ex[k]) for k in ("completed_at", "submitted_at"))
            SERVER.append((done - sent).total_seconds())
        return time.monotonic() - t0, ex.get("status") == "succeeded"

    t0 = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        out = list(pool.map(one, range(runs)))
    return [d for d, _ in out], time.monotonic() - t0, sum(1 for _, ok in out if not ok)


def ready_runs(c: httpx.Client, runs: int) -> tuple[list[float], float, int]:
    lat: list[float] = []
    fails = 0
    wall = 0.0
    for _ in range(runs):
        deadline = time.monotonic() + 60  # alice's warm runner, a run process and its kernel
        while len(subprocess.run(["pgrep", "-u", USER, "-f", "exec_api.services.warm"],
                                 capture_output=True, text=True).stdout.split()) < 3:  # fmt: skip
            if time.monotonic() > deadline:
                raise SystemExit("no ready kernel for alice within 60 s: are ready runs turned off?")
            time.sleep(0.1)
        time.sleep(0.5)  # and answering
        d, w, f = api_runs(c, 1, 1)
        lat += d
        fails += f
        wall += w
    return lat, wall, fails


# The run itself, as alice, in one process: a kernel forked and up, then the exec API's engine
# (papermill's execute_notebook) on it, five times; what no queue, worker or HTTP adds to.
IN_PROCESS = """
import json, os, statistics, sys, time
from exec_api.services.child import ForkedKernel, run, warm_up
warm_up()
job = {"notebook": sys.argv[1], "cwd": os.path.dirname(sys.argv[1]), "parameters": {"n": 1}, "types": {},
       "timeout": 60, "max_output_bytes": 10**7, "output_path": "/tmp/bench-inproc.ipynb"}
took = []
for _ in range(5):
    r, w = os.pipe()
    if os.fork() == 0:
        k = ForkedKernel()
        k.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        ok = run(job, k, [])["status"] == "succeeded"
        os.write(w, json.dumps([time.monotonic() - t0, ok]).encode())
        k.cleanup()
        os._exit(0)
    os.close(w)
    took.append(json.loads(os.read(r, 100)))
    os.wait()
print(json.dumps({"p50_s": statistics.median(t for t, _ in took), "ok": all(ok for _, ok in took)}))
"""


def in_process_run() -> dict:
    p = subprocess.run(["runuser", "-u", USER, "--", "/opt/exec-api/venv/bin/python", "-c", IN_PROCESS,
                        f"{AREA}/bench.ipynb"], capture_output=True, text=True, cwd="/tmp")  # fmt: skip
    if p.returncode != 0:
        print(f"the in-process run failed: {p.stderr[-1500:]}", flush=True)
        return {}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"{'the run alone, in one process (papermill on a kernel up)':44} p50={r['p50_s']:.3f}s", flush=True)
    return r


def papermill_runs(runs: int, concurrency: int) -> tuple[list[float], float, int, float]:
    failed: list[str] = []

    def one(i: int) -> tuple[float, bool]:
        t0 = time.monotonic()
        p = subprocess.run(["runuser", "-u", USER, "--", PAPERMILL, "--no-progress-bar", f"{AREA}/bench.ipynb",
                            f"/tmp/bench-pm-{i}.ipynb", "-p", "n", "1"], capture_output=True, cwd=AREA)  # fmt: skip
        if p.returncode != 0 and not failed:  # the first failure, whole, so a figure is never silent
            failed.append(p.stderr.decode(errors="replace")[-2000:])
            print(f"papermill CLI failed (exit {p.returncode}):\n{failed[0]}", flush=True)
        return time.monotonic() - t0, p.returncode == 0

    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        out = list(pool.map(one, range(runs)))
    wall = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return [d for d, _ in out], wall, sum(1 for _, ok in out if not ok), cpu / runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--sequential", type=int, default=15)
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args()
    with open("/root/e2e-tokens.json") as f:
        token = json.load(f)[USER]
    notebook()
    c = httpx.Client(base_url=API, headers={"Authorization": f"Bearer {token}"}, timeout=180, verify=CA)
    for nb in c.get(f"/db/notebooks/user/{USER}").json():
        if nb["name"] == "bench":
            c.delete(f"/db/notebooks/{nb['id']}")
    r = c.post("/db/notebooks", json={"name": "bench", "file_path": "bench.ipynb"})
    r.raise_for_status()
    api_runs(c, 2, 1)  # warm-up (imports, connection)
    results = {
        "api_sequential": costed("exec API, 1 at a time (submit -> succeeded)", api_runs, c, a.sequential, 1),
        "api_concurrent": costed(f"exec API, {a.concurrency} clients", api_runs, c, a.runs, a.concurrency),
    }
    SERVER.clear()
    results["api_ready"] = report("exec API, with a ready run (submit -> succeeded)", *ready_runs(c, a.sequential))
    results["api_ready"]["server_p50_s"] = statistics.median(SERVER) if SERVER else None
    print(f"{'':44} submitted -> completed by the API's clock: p50={results['api_ready']['server_p50_s']:.3f}s",
          flush=True)  # fmt: skip
    results["in_process"] = in_process_run()
    lat, wall, fails, cpu = papermill_runs(a.sequential, 1)
    results["papermill_sequential"] = report("papermill CLI, 1 at a time", lat, wall, fails) | {"cpu_s_per_run": cpu}
    print(f"{'':44} papermill CPU per run {cpu:.2f} s", flush=True)
    lat, wall, fails, cpu = papermill_runs(a.runs, a.concurrency)
    results["papermill_concurrent"] = report(f"papermill CLI, {a.concurrency} at once", lat, wall, fails)
    print(json.dumps(results))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
