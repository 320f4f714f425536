#!/opt/exec-api/venv/bin/python
"""End-to-end checks of the deployed exec API, run on the test host as root.

The users' access tokens come from the identity provider (the test OpenID provider, logged in
to through a browser by sso_check.py, in $E2E_TOKENS). Prints one line per check and exits
non-zero on the first failure.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time

import httpx
import jwt

# Through nginx over HTTPS, trusting the install's private CA (both given by verify.yml).
API = os.environ.get("E2E_API", "http://127.0.0.1:8000")
CA = os.environ.get("E2E_CA") or True
with open(os.environ["E2E_TOKENS"]) as f:
    TOKENS: dict[str, str] = json.load(f)

PROBE = """import getpass, json, re, subprocess
unit = re.search(r"(exec-api-(?:run|ready)-[^/\\n]+\\.service)", open("/proc/self/cgroup").read()).group(1)
keys = "User,MemoryMax,CPUQuotaPerSecUSec,TasksMax,RuntimeMaxUSec,KillMode,NoNewPrivileges"
props = subprocess.run(["systemctl", "show", unit, "-p", keys], capture_output=True, text=True).stdout
print(json.dumps({"user": getpass.getuser(), "n": n, "unit": unit, "props": props}))"""


# The sleep notebook notes the unit it runs in, so the kill -9 check knows which one to watch.
WHERE = """import re
unit = re.search(r"(exec-api-[a-z]+-[^/\\n]+\\.service)", open("/proc/self/cgroup").read()).group(1)
open("sleep.unit", "w").write(unit)"""
SLEEP_UNIT = "/home/alice/notebooks/sleep.unit"

# What a run's sandbox lets it see and do: only its own home under /home, nothing writable
# outside it (but /tmp), and the network to the exec API and the database.
SANDBOX = """import json, os, socket
def reach(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return True
    except OSError as e:
        return repr(e)
open("sandbox.written", "w").write("ok")
print(json.dumps({"homes": sorted(os.listdir("/home")), "etc": os.access("/etc", os.W_OK),
                  "opt": os.access("/opt/exec-api", os.W_OK), "tmp": os.access("/tmp", os.W_OK),
                  "umask": oct(os.umask(0o77)), "api": reach(8000), "db": reach(5432)}))"""


def forged(user: str) -> str:
    """A token like the provider's, with a key of our own: the API must not accept it."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    claims = jwt.decode(TOKENS[user], options={"verify_signature": False})
    header = jwt.get_unverified_header(TOKENS[user])
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": header.get("kid")})


def client(user: str) -> httpx.Client:
    return httpx.Client(base_url=API, headers={"Authorization": f"Bearer {TOKENS[user]}"}, timeout=120, verify=CA)


def anonymous(path: str, tok: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    return httpx.get(f"{API}{path}", headers=headers, timeout=30, verify=CA)


def check(name: str, ok: bool, detail: object = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else f': {detail}'}", flush=True)
    if not ok:
        sys.exit(1)


def notebook(path: str, cells: list[str], parameters: str = "n = 1") -> None:
    nb = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "p", "metadata": {"tags": ["parameters"]},
                   "outputs": [], "source": parameters}]
        + [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [], "source": c}
           for i, c in enumerate(cells)],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }  # fmt: skip
    owner = path.split("/")[2]
    with open(path, "w") as f:
        json.dump(nb, f)
    subprocess.run(["chown", f"{owner}:{owner}", path], check=True)


def units_started() -> int:
    out = subprocess.run(["journalctl", "-u", "exec-api-launcher@*", "--no-pager", "-o", "cat"],
                         capture_output=True, text=True).stdout  # fmt: skip
    return out.count("exec-api-launcher: run ")


def wait_status(c: httpx.Client, eid: int, statuses: set[str], seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        try:
            ex = c.get(f"/db/executions/{eid}").json()
            if ex.get("status") in statuses or time.monotonic() > deadline:
                return ex
        except (httpx.TransportError, ValueError):  # the API restarting: nginx answers 502
            if time.monotonic() > deadline:
                raise
        time.sleep(0.3)


def until(probe, seconds: float, step: float = 0.2):
    """probe()'s first truthy answer within `seconds`, else its last answer."""
    deadline = time.monotonic() + seconds
    while not (answer := probe()) and time.monotonic() < deadline:
        time.sleep(step)
    return answer


def units(pattern: str, user: str) -> list[str]:
    """Active units matching `pattern` that run as `user`."""
    names = subprocess.run(["systemctl", "list-units", "--no-legend", "--plain", "--state=active", pattern],
                           capture_output=True, text=True).stdout.split()  # fmt: skip
    found = []
    for name in (n for n in names if n.endswith(".service")):
        owner = subprocess.run(["systemctl", "show", "-p", "User", "--value", name], capture_output=True,
                               text=True).stdout.strip()  # fmt: skip
        if owner in (user, str(pwd.getpwnam(user).pw_uid)):
            found.append(name)
    return found


def kernel_up(user: str) -> bool:
    return subprocess.run(["pgrep", "-u", user, "-f", "ipykernel_launcher"], capture_output=True).returncode == 0


def probe_of(c: httpx.Client, eid: int) -> tuple[dict, dict]:
    out = c.get(f"/db/executions/{eid}/output")
    text = "".join("".join(o.get("text", "")) for cell in out.json()["cells"] for o in cell.get("outputs", []))
    probe = json.loads(text.strip().splitlines()[-1])
    return probe, dict(line.split("=", 1) for line in probe["props"].split("\n") if "=" in line)


def limited(props: dict) -> bool:
    return (props.get("MemoryMax") == str(2 * 1024**3) and props.get("TasksMax") == "256"
            and props.get("CPUQuotaPerSecUSec") == "1s" and props.get("KillMode") == "control-group"
            and props.get("NoNewPrivileges") == "yes")  # fmt: skip


def memory_limits_enforced() -> bool:
    """False on a host whose systemd cannot write the memory controller (nspawn on cgroup v1)."""
    with open("/proc/self/mounts") as f:
        for line in f:
            _dev, where, fstype, opts = line.split()[:4]
            if fstype == "cgroup2" and where == "/sys/fs/cgroup":
                return True
            if fstype == "cgroup" and where.endswith("/memory"):
                return "rw" in opts.split(",")
    return False


def exposure(unit: str) -> float:
    out = subprocess.run(["systemd-analyze", "security", "--no-pager", unit], capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1].split(":")[1].split()[0])


def last_json(c: httpx.Client, eid: int) -> dict:
    out = c.get(f"/db/executions/{eid}/output").json()
    text = "".join("".join(o.get("text", "")) for cell in out["cells"] for o in cell.get("outputs", []))
    return json.loads(text.strip().splitlines()[-1])


def fair_share(alice: httpx.Client, bob: httpx.Client) -> None:
    """alice floods the queue: past her queued limit she gets 429; bob's one run starts (and
    ends) while her backlog still waits."""
    notebook("/home/alice/notebooks/short.ipynb", ["import time; time.sleep(n)"], "n = 3")
    notebook("/home/bob/notebooks/quick.ipynb", ["print(n)"])
    refused, submitted, other = None, 0, []
    for _ in range(40):
        r = alice.post("/execute", json={"path": "short.ipynb"})
        if r.status_code == 429:
            refused = r
            break
        submitted += r.status_code == 202
        other += [] if r.status_code == 202 else [r.text]
    check(f"alice's {submitted} submissions before it are queued (202)", not other, other)
    check(f"alice's queue is full after {submitted} submissions: 429", refused is not None, submitted)
    detail = refused.json().get("detail", "")
    check("the 429 says how many wait and the limit", "has 20 waiting, the limit is 20" in detail, detail)
    check("with Retry-After", refused.headers.get("retry-after", "").isdigit(), dict(refused.headers))
    t0 = time.monotonic()
    r = bob.post("/execute", json={"path": "quick.ipynb", "wait": True})
    took = time.monotonic() - t0
    check(f"bob's one run succeeds ({took:.1f} s)", r.json().get("execution", {}).get("status") == "succeeded", r.text)
    waiting = alice.get("/db/executions", params={"status": "queued", "limit": 1000}).json()
    check(f"before alice's backlog drained ({len(waiting)} of hers still queued)", len(waiting) >= 10, len(waiting))
    for ex in waiting + alice.get("/db/executions", params={"status": "running"}).json():
        alice.post(f"/db/executions/{ex['id']}/cancel")
    left = until(lambda: not alice.get("/db/executions", params={"status": "running"}).json(), 60, 1)
    check("alice's flood is cancelled", left, "runs still running")


def main() -> None:
    alice, bob = client("alice"), client("bob")
    notebook("/home/alice/notebooks/probe.ipynb", [PROBE])
    notebook("/home/alice/notebooks/sleep.ipynb", [WHERE, "import time; time.sleep(n)"], "n = 60")
    notebook("/home/alice/notebooks/hog.ipynb", ["x = bytearray(n * 1024 * 1024); x[::4096] = b'1' * len(x[::4096])"],
             "n = 10")  # fmt: skip

    check("liveness without a token", anonymous("/health").status_code == 200)
    check("no token: 401", anonymous("/db/notebooks").status_code == 401)
    r = anonymous("/db/notebooks", forged("alice"))
    check("a token not signed by the identity provider: 401", r.status_code == 401, r.text)
    r = alice.get("/ready")
    check("readiness with the database", r.status_code == 200 and "ready" in r.text, r.text)

    for nb in alice.get("/db/notebooks/user/alice").json():  # a re-run of these checks starts clean
        alice.delete(f"/db/notebooks/{nb['id']}")
    r = alice.post("/db/notebooks", json={"name": "probe", "file_path": "probe.ipynb"})
    check("alice registers a notebook in her area", r.status_code == 201, r.text)
    nid = r.json()["id"]
    check("its parameters cell was read", [p["param_name"] for p in r.json()["parameters"]] == ["n"], r.text)
    r = alice.post("/execute-notebook", json={"notebook_id": nid, "parameters": {"n": 21}, "wait": True})
    ex = r.json().get("execution", {})
    check("the run succeeds", r.status_code == 200 and ex.get("status") == "succeeded", r.text)
    out = alice.get(f"/db/executions/{ex['id']}/output")
    check("its output notebook downloads", out.status_code == 200, out.status_code)
    probe, props = probe_of(alice, ex["id"])
    alice_uid = str(pwd.getpwnam("alice").pw_uid)
    check("it ran as alice", probe["user"] == "alice" and props.get("User") in ("alice", alice_uid), probe)
    check("with the value passed as a parameter", probe["n"] == 21, probe)
    check("in a transient unit with limits", limited(props), props)

    # Her next run is started ahead: a unit of hers, with the same limits, whose kernel is up.
    ready = until(lambda: kernel_up("alice") and units("exec-api-ready-*", "alice"), 60)
    check("a ready run waits for alice's next run", bool(ready), ready)
    time.sleep(2)  # the kernel answers its first request
    t0 = time.monotonic()
    r = alice.post("/execute-notebook", json={"notebook_id": nid, "parameters": {"n": 22}, "wait": True})
    took = time.monotonic() - t0
    ex2 = r.json().get("execution", {})
    check("the next run succeeds", ex2.get("status") == "succeeded", r.text)
    probe, props = probe_of(alice, ex2["id"])
    check("in the unit started ahead for her", probe["unit"] in ready, (probe["unit"], ready))
    check("as alice, with the same limits", probe["user"] == "alice" and probe["n"] == 22 and limited(props), probe)
    check(f"without waiting for a kernel start (submit -> succeeded {took:.3f} s)", took < 1.0, took)
    check("a ready run for bob only after a run of bob's", not units("exec-api-ready-*", "bob"))

    r = bob.get(f"/db/notebooks/{nid}")
    check("bob cannot see alice's notebook", r.status_code in (403, 404), r.status_code)
    r = bob.post("/execute-notebook", json={"notebook_id": nid})
    check("bob cannot run it", r.status_code in (403, 404), r.status_code)
    r = bob.get(f"/db/executions/{ex['id']}")
    check("bob cannot see alice's execution", r.status_code in (403, 404), r.status_code)

    notebook("/home/alice/notebooks/sandbox.ipynb", [SANDBOX])
    if os.path.exists("/home/alice/notebooks/sandbox.written"):
        os.unlink("/home/alice/notebooks/sandbox.written")
    r = alice.post("/execute", json={"path": "sandbox.ipynb", "wait": True})
    ex = r.json().get("execution", {})
    check("a run in the sandbox succeeds", ex.get("status") == "succeeded", r.text)
    seen = last_json(alice, ex["id"])
    check("it sees only its own home under /home", seen["homes"] == ["alice"], seen)
    check("it writes in its home", os.path.exists("/home/alice/notebooks/sandbox.written"), seen)
    writable = (seen["etc"], seen["opt"], seen["tmp"])
    check("not in /etc or the installation, but in /tmp", writable == (False, False, True), seen)
    check("with umask 077", seen["umask"] == "0o77", seen)
    check("it reaches the exec API and the database", seen["api"] is True and seen["db"] is True, seen)
    fair_share(alice, bob)

    before_units = units_started()
    before_count = len(alice.get("/db/executions", params={"limit": 1000}).json())
    for bad in ("/etc/passwd", "../bob/x.ipynb", "https://example.org/x.ipynb", "s3://bucket/x.ipynb"):
        r = alice.post("/execute", json={"path": bad, "wait": True})
        check(f"path {bad!r} refused with 4xx", 400 <= r.status_code < 500, r.status_code)
    after = alice.get("/db/executions", params={"limit": 1000}).json()
    check("nothing recorded for refused paths", len(after) == before_count, after)
    check("no unit started for refused paths", units_started() == before_units)

    if memory_limits_enforced():
        r = alice.post("/execute", json={"path": "hog.ipynb", "params": {"n": 3000}, "wait": True})
        check(
            "a run over its memory limit ends failed", r.json().get("execution", {}).get("status") == "failed", r.text
        )
    else:
        print(
            "skip a run over its memory limit: this host's memory cgroup controller is read-only (a systemd-nspawn "
            "machine on a cgroup-v1 host), so MemoryMax is recorded on the unit but not enforced",
            flush=True,
        )
    r = alice.post("/execute", json={"path": "sleep.ipynb", "params": {"n": 60}, "wait": True, "timeout_seconds": 3})
    check("a run over its time limit ends timed_out", r.json().get("execution", {}).get("status") == "timed_out",
          r.text)  # fmt: skip
    check("the service is still healthy", anonymous("/health").status_code == 200)

    if os.path.exists(SLEEP_UNIT):
        os.unlink(SLEEP_UNIT)
    r = alice.post("/execute", json={"path": "sleep.ipynb", "params": {"n": 30}})
    eid = r.json()["execution_id"]
    ex = wait_status(alice, eid, {"running"}, 30)
    noted = until(lambda: os.path.exists(SLEEP_UNIT), 30)
    check("a long run is running", ex.get("status") == "running" and noted, ex)
    with open(SLEEP_UNIT) as f:
        score = exposure(f.read().strip())
    check(f"its unit's exposure (systemd-analyze security) is {score} <= 5.0", score <= 5.0, score)
    main_pid = int(subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", "exec-api.service"],
                                  capture_output=True, text=True, check=True).stdout)  # fmt: skip
    os.kill(main_pid, signal.SIGKILL)  # kill -9 of the service's process, mid-run
    time.sleep(1)
    ex = wait_status(alice, eid, {"failed", "succeeded", "queued"}, 90)
    check("after kill -9 and restart it is not left running", ex.get("status") in {"failed", "succeeded", "queued"},
          ex)  # fmt: skip
    with open(SLEEP_UNIT) as f:
        orphan = f.read().strip()
    running = ("active", "activating", "deactivating")
    ended = until(lambda: subprocess.run(["systemctl", "is-active", orphan], capture_output=True,
                                         text=True).stdout.strip() not in running, 30, 1)  # fmt: skip
    check(f"the orphaned run's unit ({orphan}) ended after the restart", ended)
    ended = until(lambda: not units("exec-api-ready-*", "alice"), 30, 1)
    check("the ready unit that waited for alice ended with the killed service", ended, "one is still active")
    check("the service came back", anonymous("/health").status_code == 200)
    print("all checks passed")


if __name__ == "__main__":
    main()
