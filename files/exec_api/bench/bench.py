"""Benchmarks of the exec API beside papermill's CLI, measured in the same run.

    .venv/bin/python bench/bench.py [--executions 500] [--concurrency 4] [--papermill-runs 40]

Starts its own PostgreSQL (tests/pg.py), a stand-in IdP (tests/idp.py) and the service
(``uvicorn exec_api.main:app``, one process, embedded worker, local runner), then measures:

1. throughput: N trivial executions, ``concurrency`` clients each submitting and polling
   until done; executions/s, latency p50/p99 (submit -> succeeded), failures;
2. latency with a ready kernel: sequential submissions, pausing so the pool is refilled;
3. CRUD: GET endpoints at 100 concurrent connections (closed loop), p50/p99, requests/s;
4. papermill's CLI on the same notebook: sequential (wall, CPU) and at the same concurrency.

Not a test: prints a report (and writes bench/results/latest.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import nbformat

HERE = Path(__file__).resolve().parent
PKG = HERE.parent
sys.path.insert(0, str(PKG / "tests"))
sys.path.insert(0, str(PKG))

from idp import IdP  # noqa: E402
from pg import free_port, start_pg  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def summary(xs: list[float]) -> dict[str, float]:
    return {
        "n": len(xs),
        "p50": statistics.median(xs) if xs else float("nan"),
        "p90": pct(xs, 90),
        "p99": pct(xs, 99),
        "max": max(xs) if xs else float("nan"),
    }


def trivial_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    c = nbformat.v4.new_code_cell("x = 1")
    c.metadata["tags"] = ["parameters"]
    nb.cells = [c, nbformat.v4.new_code_cell("print(x + 1)")]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


class Service:
    """uvicorn with ``api_workers`` processes (no embedded worker) + one ``exec-api-worker``
    process: the recommended deployment shape.  ``api_workers=0``: one uvicorn process with
    the embedded worker."""

    def __init__(self, concurrency: int, workdir: Path, api_workers: int = 2) -> None:
        self.pg = start_pg()
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.pg.port} user=postgres dbname=postgres", autocommit=True
        ) as c:
            c.execute("CREATE DATABASE exec_api")
        self.idp = IdP()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.update(
            {
                "EXEC_API_DATABASE_URL": self.pg.url("exec_api"),
                "EXEC_API_NOTEBOOK_ROOT_TEMPLATE": str(workdir / "home" / "{username}" / "nb"),
                "EXEC_API_OUTPUT_ROOT": str(workdir / "out"),
                "EXEC_API_OIDC_ISSUER": self.idp.issuer,
                "EXEC_API_OIDC_AUDIENCE": "exec-api",
                "EXEC_API_WORKER_CONCURRENCY": str(concurrency),
                "EXEC_API_LOG_LEVEL": "WARNING",
                "EXEC_API_WORKER_EMBEDDED": "false" if api_workers else "true",
            }
        )
        subprocess.run(
            [str(PKG / ".venv/bin/alembic"), "upgrade", "head"],
            cwd=PKG,
            env=self.env,
            check=True,
            capture_output=True,
        )
        self.proc = subprocess.Popen(
            [
                str(PKG / ".venv/bin/uvicorn"),
                "exec_api.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
                "--workers",
                str(max(1, api_workers)),
            ],
            cwd=PKG,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.worker: subprocess.Popen[bytes] | None = None
        if api_workers:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "exec_api.worker"],
                cwd=PKG,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        time.sleep(3)  # let the kernel pool fill

    def pids(self) -> list[int]:
        return [self.proc.pid] + ([self.worker.pid] if self.worker else [])

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.worker.kill()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.idp.server.shutdown()
        self.pg.stop()


def cpu_of(pid: int) -> float:
    """CPU seconds of a process and all its descendants still alive (from /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = {pid}
    try:
        out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True)
        children: dict[int, list[int]] = {}
        for line in out.stdout.split("\n"):
            if line.strip():
                a, b = map(int, line.split())
                children.setdefault(b, []).append(a)
        stack = [pid]
        while stack:
            p = stack.pop()
            for c in children.get(p, []):
                pids.add(c)
                stack.append(c)
    except (OSError, ValueError):
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as fh:
                f = fh.read().split(")")[-1].split()
            total += (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / tick
        except OSError:
            continue
    return total


def run_execs(
    svc: Service, headers: dict[str, str], n: int, concurrency: int, pause: float = 0.0
) -> dict[str, Any]:
    lat: list[float] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    counter = iter(range(n))

    def client() -> None:
        with httpx.Client(base_url=svc.url, headers=headers, timeout=60) as c:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                if pause:
                    time.sleep(pause)
                t0 = time.perf_counter()
                r = c.post(
                    "/db/executions",
                    json={"notebook_path": "trivial.ipynb", "parameters": {"x": i}},
                )
                if r.status_code != 202:
                    with lock:
                        statuses[f"http_{r.status_code}"] = (
                            statuses.get(f"http_{r.status_code}", 0) + 1
                        )
                    continue
                eid = r.json()["execution_id"]
                while True:
                    s = c.get(f"/db/executions/{eid}").json()["status"]
                    if s not in ("queued", "running"):
                        break
                    time.sleep(0.01)
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
                    statuses[s] = statuses.get(s, 0) + 1

    cpu0 = sum(cpu_of(p) for p in svc.pids())
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        for f in [ex.submit(client) for _ in range(concurrency)]:
            f.result()
    wall = time.perf_counter() - t0
    cpu = sum(cpu_of(p) for p in svc.pids()) - cpu0
    return {
        "executions": n,
        "concurrency": concurrency,
        "wall_s": wall,
        "rate_per_s": n / wall,
        "latency_s": summary(lat),
        "statuses": statuses,
        "failures": n - statuses.get("succeeded", 0),
        "service_cpu_s_per_exec_approx": cpu / n,
    }


class RawConn:
    """A minimal keep-alive HTTP/1.1 GET client on asyncio streams: a far cheaper load
    generator than a full client library, so the server, not the generator, is measured."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        req = f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}\r\n"
        self.writer.write(req.encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _hostport(url: str) -> tuple[str, int]:
    hp = url.split("://", 1)[1]
    h, p = hp.rsplit(":", 1)
    return h, int(p)


async def _crud(
    url: str, headers: dict[str, str], paths: list[str], conns: int, total: int
) -> dict[str, Any]:
    """Closed loop: ``conns`` connections, each sending its next request on the answer."""
    host, port = _hostport(url)
    lat: list[float] = []
    errors = 0
    cs = [RawConn(host, port, headers) for _ in range(conns)]
    await asyncio.gather(*[c.get(paths[0]) for c in cs])
    it = iter(range(total))

    async def worker(k: int) -> None:
        nonlocal errors
        for i in it:
            t0 = time.perf_counter()
            try:
                ok = await cs[k].get(paths[(i + k) % len(paths)]) == 200
            except (OSError, asyncio.IncompleteReadError, ValueError):
                ok = False
                cs[k] = RawConn(host, port, headers)
            lat.append(time.perf_counter() - t0)
            errors += 0 if ok else 1

    t0 = time.perf_counter()
    await asyncio.gather(*[worker(k) for k in range(conns)])
    wall = time.perf_counter() - t0
    for c in cs:
        c.close()
    return {
        "connections": conns,
        "requests": total,
        "rps": total / wall,
        "latency_ms": {k: (v * 1000 if k != "n" else v) for k, v in summary(lat).items()},
        "errors": errors,
    }


async def _crud_open(
    url: str, headers: dict[str, str], paths: list[str], conns: int, rate: float, duration: float
) -> dict[str, Any]:
    """Open loop: ``rate`` requests/s in all, spread over ``conns`` connections, each request
    timed from its scheduled start (no coordinated omission)."""
    host, port = _hostport(url)
    lat: list[float] = []
    errors = 0
    cs = [RawConn(host, port, headers) for _ in range(conns)]
    await asyncio.gather(*[c.get(paths[0]) for c in cs])
    interval = conns / rate
    start = time.perf_counter() + 0.5

    async def worker(k: int) -> None:
        nonlocal errors
        i = 0
        while True:
            due = start + (k / conns) * interval + i * interval
            if due > start + duration:
                return
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                ok = await cs[k].get(paths[(i + k) % len(paths)]) == 200
            except (OSError, asyncio.IncompleteReadError, ValueError):
                ok = False
                cs[k] = RawConn(host, port, headers)
            lat.append(time.perf_counter() - due)
            errors += 0 if ok else 1
            i += 1

    await asyncio.gather(*[worker(k) for k in range(conns)])
    for c in cs:
        c.close()
    return {
        "connections": conns,
        "target_rps": rate,
        "requests": len(lat),
        "latency_ms": {k: (v * 1000 if k != "n" else v) for k, v in summary(lat).items()},
        "errors": errors,
    }


def _run_load(fn: str, *args: Any) -> dict[str, Any]:
    # The load generator runs in its own process, so it does not share the GIL with the probe.
    code = (
        "import asyncio, json, sys; sys.path.insert(0, sys.argv[1]); import bench; "
        "a = json.loads(sys.argv[3]); "
        "print(json.dumps(asyncio.run(getattr(bench, sys.argv[2])(*a))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(HERE), fn, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=HERE,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    res: dict[str, Any] = json.loads(out.stdout)
    return res


def crud_bench(
    svc: Service, headers: dict[str, str], conns: int, total: int, open_rates: list[float]
) -> dict[str, Any]:
    with httpx.Client(base_url=svc.url, headers=headers) as c:
        r = c.post("/db/notebooks", json={"name": "trivial", "file_path": "trivial.ipynb"})
        nid = r.json()["id"] if r.status_code == 201 else c.get("/db/notebooks").json()[0]["id"]
    paths = [
        f"/db/notebooks/{nid}",
        "/db/notebooks",
        f"/db/parameters/notebook/{nid}",
        "/db/executions?limit=10",
    ]
    return {
        "closed_loop": _run_load("_crud", svc.url, headers, paths, conns, total),
        "open_loop": [
            _run_load("_crud_open", svc.url, headers, paths, conns, rate, 10.0)
            for rate in open_rates
        ],
    }


def papermill_bench(
    nb: Path, workdir: Path, n_seq: int, n_conc: int, concurrency: int
) -> dict[str, Any]:
    pm = str(PKG / ".venv/bin/papermill")

    def one(i: int) -> tuple[float, bool]:
        t0 = time.perf_counter()
        r = subprocess.run(
            [
                pm,
                str(nb),
                str(workdir / f"pm-{i}.ipynb"),
                "-p",
                "x",
                str(i),
                "--log-level",
                "ERROR",
            ],
            capture_output=True,
        )
        return time.perf_counter() - t0, r.returncode == 0

    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    seq = [one(i) for i in range(n_seq)]
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) / n_seq
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        conc = list(ex.map(one, range(1000, 1000 + n_conc)))
    wall = time.perf_counter() - t0
    return {
        "sequential": {
            "runs": n_seq,
            "latency_s": summary([d for d, _ in seq]),
            "cpu_s_per_run": cpu,
            "failures": sum(1 for _, ok in seq if not ok),
        },
        "concurrent": {
            "runs": n_conc,
            "concurrency": concurrency,
            "rate_per_s": n_conc / wall,
            "latency_s": summary([d for d, _ in conc]),
            "failures": sum(1 for _, ok in conc if not ok),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--executions", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--worker-concurrency", type=int, default=4)
    ap.add_argument("--ready-runs", type=int, default=40)
    ap.add_argument("--crud-requests", type=int, default=5000)
    ap.add_argument("--crud-connections", type=int, default=100)
    ap.add_argument(
        "--crud-open-rates",
        default="100,200,400",
        help="open-loop total request rates to try (req/s)",
    )
    ap.add_argument(
        "--api-workers",
        type=int,
        default=2,
        help="uvicorn processes (0: one process with the embedded worker)",
    )
    ap.add_argument("--papermill-runs", type=int, default=20)
    ap.add_argument("--papermill-concurrent-runs", type=int, default=40)
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="exec-api-bench-"))
    svc = Service(args.worker_concurrency, workdir, args.api_workers)
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}}
    try:
        # The Unix account running the bench: its notebook area must be its own (the API
        # refuses an area another uid owns).
        user = pwd.getpwuid(os.getuid()).pw_name
        nbpath = workdir / "home" / user / "nb" / "trivial.ipynb"
        trivial_notebook(nbpath)
        headers = {"Authorization": f"Bearer {svc.idp.token(user, exp_in=7200)}"}
        run_execs(svc, headers, 8, 2)  # warm-up
        print("throughput ...", flush=True)
        results["exec_api_throughput"] = run_execs(svc, headers, args.executions, args.concurrency)
        print(json.dumps(results["exec_api_throughput"], indent=1), flush=True)
        print("ready-kernel latency ...", flush=True)
        results["exec_api_ready_kernel"] = run_execs(svc, headers, args.ready_runs, 1, pause=0.4)
        print(json.dumps(results["exec_api_ready_kernel"], indent=1), flush=True)
        print("CRUD ...", flush=True)
        results["crud"] = crud_bench(
            svc,
            headers,
            args.crud_connections,
            args.crud_requests,
            [float(x) for x in args.crud_open_rates.split(",")],
        )
        print(json.dumps(results["crud"], indent=1), flush=True)
    finally:
        svc.stop()
    print("papermill CLI ...", flush=True)
    results["papermill_cli"] = papermill_bench(
        nbpath, workdir, args.papermill_runs, args.papermill_concurrent_runs, args.concurrency
    )
    print(json.dumps(results["papermill_cli"], indent=1), flush=True)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)
    t, r, c, p = (
        results["exec_api_throughput"],
        results["exec_api_ready_kernel"],
        results["crud"],
        results["papermill_cli"],
    )
    print("\n=== summary (same run, same machine) ===")
    print(
        f"exec API : {t['rate_per_s']:.2f} exec/s at concurrency {t['concurrency']}, "
        f"p50 {t['latency_s']['p50']:.3f} s, p99 {t['latency_s']['p99']:.3f} s, "
        f"failures {t['failures']}/{t['executions']}"
    )
    print(
        f"papermill: {p['concurrent']['rate_per_s']:.2f} exec/s at concurrency "
        f"{p['concurrent']['concurrency']}, p50 {p['concurrent']['latency_s']['p50']:.3f} s, "
        f"p99 {p['concurrent']['latency_s']['p99']:.3f} s, "
        f"failures {p['concurrent']['failures']}/{p['concurrent']['runs']}"
    )
    print(
        f"ready kernel: exec API median submit->succeeded {r['latency_s']['p50']:.3f} s "
        f"(p99 {r['latency_s']['p99']:.3f}); papermill sequential median "
        f"{p['sequential']['latency_s']['p50']:.3f} s, {p['sequential']['cpu_s_per_run']:.2f} "
        "CPU-s/run"
    )
    cl = c["closed_loop"]
    print(
        f"CRUD closed loop: {cl['connections']} connections, {cl['rps']:.0f} req/s, "
        f"p50 {cl['latency_ms']['p50']:.1f} ms, p99 {cl['latency_ms']['p99']:.1f} ms, "
        f"errors {cl['errors']}"
    )
    for o in c["open_loop"]:
        print(
            f"CRUD open loop: {o['connections']} connections at {o['target_rps']:.0f} req/s: "
            f"p50 {o['latency_ms']['p50']:.1f} ms, p99 {o['latency_ms']['p99']:.1f} ms, "
            f"errors {o['errors']}"
        )


if __name__ == "__main__":
    main()
