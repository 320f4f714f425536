"""The deployed exec API end to end, driven through its own typed client (exec_api.client) with
the access tokens alice and bob got from the provider in a browser, over HTTPS through nginx; the
host's side (units, kernels, files) read as root with testinfra.

The tests of this module build on each other in file order: alice's first run, her next run on
the kernel her warm runner forked ahead, what bob may not see (nor share: no process of his runs
is one of hers), a run's sandbox, a flood of alice's, paths outside her area, limits, and last a
kill -9 of the service in the middle of a run.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from exec_api.client import ExecApiError
from hostlib import exposure

# The limits each run gets (roles/exec_api defaults: exec_api_run_memory_max 2G,
# exec_api_run_tasks_max 256, exec_api_run_cpu_quota 100%), and the queue a user may fill
# (exec_api_max_queued_per_user 20).
RUN_LIMITS = {"MemoryMax": str(2 * 1024**3), "TasksMax": "256", "CPUQuotaPerSecUSec": "1s",
              "KillMode": "control-group", "NoNewPrivileges": "yes"}  # fmt: skip
MAX_QUEUED = 20
# Units that run user code score at most this in systemd-analyze security (STYLE.md).
USER_CODE_EXPOSURE = 5.0

# Prints who ran it, the parameter, and its unit's properties.
PROBE = """import getpass, json, re, subprocess
unit = re.search(r"(exec-api-warm-[^/\\n]+\\.service)", open("/proc/self/cgroup").read()).group(1)
keys = "User,MemoryMax,CPUQuotaPerSecUSec,TasksMax,RuntimeMaxUSec,KillMode,NoNewPrivileges"
props = subprocess.run(["systemctl", "show", unit, "-p", keys], capture_output=True, text=True).stdout
print(json.dumps({"user": getpass.getuser(), "n": n, "unit": unit, "props": props}))"""

# Who runs it, in which processes: the kernel, the run process, the warm runner; and what the
# run may do to its warm runner (the user's own process, but not dumpable).
PROCESSES = """import getpass, json, os, re
def parent(pid):
    return int(open(f"/proc/{pid}/stat").read().split(")")[-1].split()[1])
run = os.getppid()
warm = parent(run)
def reach(path):
    try:
        open(path, "rb").close()
        return "opened"
    except PermissionError:
        return "refused"
    except FileNotFoundError:  # ProtectProc=invisible hides what the user may not ptrace
        return "invisible"
unit = re.search(r"(exec-api-warm-[^/\\n]+\\.service)", open("/proc/self/cgroup").read()).group(1)
print(json.dumps({"user": getpass.getuser(), "pids": [os.getpid(), run, warm], "group": os.getpgid(0),
                  "unit": unit, "fd": reach(f"/proc/{warm}/fd/1"), "mem": reach(f"/proc/{warm}/mem")}))"""

# Starts a helper in its own session (as jupyter_client starts kernels of other kernelspecs),
# waits while another run of alice's ends, and says whether its helper lived through that.
HELPER = """import os, subprocess, time
p = subprocess.Popen(["sleep", "60"], start_new_session=True)
open("helper.started", "w").write(str(p.pid))
while not os.path.exists("other.ended"):
    time.sleep(0.1)
time.sleep(1)
print("alive" if p.poll() is None else "killed")"""

# Leaves a process behind that left the run's process group (its own session), and notes its pid.
ESCAPE = """import subprocess
p = subprocess.Popen(["sleep", "300"], start_new_session=True)
open("escaped.pid", "w").write(str(p.pid))"""

# Notes the unit it runs in, so the kill -9 test knows which one to watch.
WHERE = """import re
unit = re.search(r"(exec-api-[a-z]+-[^/\\n]+\\.service)", open("/proc/self/cgroup").read()).group(1)
open("sleep.unit", "w").write(unit)"""
SLEEP_UNIT = "/home/alice/notebooks/sleep.unit"

# What a run's sandbox lets it see and do.
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


def poll(probe, seconds: float, step: float = 0.2):
    """probe()'s first truthy answer within `seconds`, else its last answer."""
    deadline = time.monotonic() + seconds
    while not (answer := probe()) and time.monotonic() < deadline:
        time.sleep(step)
    return answer


def refusal(call) -> int | None:
    """The HTTP status with which the exec API refused call(), or None if it did not."""
    try:
        call()
    except ExecApiError as e:
        return e.status_code
    return None


def printed(api, execution_id: int) -> dict:
    """The last line a run printed, as JSON (from its output notebook)."""
    nb = json.loads(api.output(execution_id))
    text = "".join("".join(o.get("text", "")) for cell in nb["cells"] for o in cell.get("outputs", []))
    return json.loads(text.strip().splitlines()[-1])


def printed_text(api, execution_id: int) -> str:
    nb = json.loads(api.output(execution_id))
    return "".join("".join(o.get("text", "")) for cell in nb["cells"] for o in cell.get("outputs", [])).strip()


def probe_props(probe: dict) -> dict:
    return dict(line.split("=", 1) for line in probe["props"].split("\n") if "=" in line)


def units_of(host, pattern: str, user: str) -> list[str]:
    """Active service units matching `pattern` that run as `user`."""
    uid = host.user(user).uid
    listed = f"systemctl list-units --no-legend --plain --state=active '{pattern}' | awk '/\\.service /{{print $1}}'"
    out = host.check_output(f'for u in $({listed}); do echo "$u $(systemctl show -p User --value $u)"; done')
    return [line.split()[0] for line in out.splitlines() if line.split()[1:] in ([user], [str(uid)])]


def units_started(host) -> int:
    """How many runs the launcher has started, by its journal."""
    return host.check_output("journalctl -u 'exec-api-launcher@*' --no-pager -o cat").count("exec-api-launcher: run ")


def health(api) -> int:
    try:
        return api.http.get("/health").status_code
    except httpx.TransportError:
        return 0


# ------------------------------------------------------------------------------ alice's first run
def client_of(user: str):
    """A fixture named after the user: their exec API client (here `alice` is not the top
    conftest's kernel in her server)."""

    @pytest.fixture(scope="module", name=user)
    def client(exec_api):
        return exec_api(user)

    return client


alice, bob = client_of("alice"), client_of("bob")


@pytest.fixture(scope="module")
def probe_notebook(alice, notebook):
    """alice's probe, registered (her earlier registrations deleted: a re-run starts clean)."""
    for nb in alice.notebooks():
        alice.delete_notebook(nb.id)
    notebook("alice", "probe.ipynb", [PROBE])
    notebook("alice", "sleep.ipynb", [WHERE, "import time; time.sleep(n)"], "n = 60")
    notebook("alice", "hog.ipynb", ["x = bytearray(n * 1024 * 1024); x[::4096] = b'1' * len(x[::4096])"], "n = 10")
    return alice.register_notebook("probe.ipynb", name="probe")


@pytest.fixture(scope="module")
def first_run(alice, probe_notebook):
    return alice.wait(alice.run(notebook_id=probe_notebook.id, parameters={"n": 21}).id, timeout=300)


def test_health_answers_without_a_token(alice):
    assert health(alice) == 200


def test_readiness_with_the_database(alice):
    r = alice.http.get("/ready", headers=alice.headers)
    assert r.status_code == 200 and r.json().get("status") == "ready", f"/ready: HTTP {r.status_code} {r.text}"


def test_alice_registers_a_notebook_and_its_parameters_cell_is_read(probe_notebook):
    names = [p.param_name for p in probe_notebook.parameters]
    assert names == ["n"], f"parameters read from probe.ipynb: {names}"


def test_alices_run_succeeds(first_run):
    assert first_run.status == "succeeded", f"run {first_run.id}: {first_run.status} {first_run.error_message}"


def test_its_output_notebook_downloads(alice, first_run):
    nb = json.loads(alice.output(first_run.id))
    assert nb.get("nbformat") == 4 and nb.get("cells"), f"output of run {first_run.id}: {str(nb)[:300]}"


def test_it_ran_as_alice_with_the_parameter(alice, api_host, first_run):
    probe = printed(alice, first_run.id)
    user = probe_props(probe).get("User")
    assert probe["user"] == "alice" and user in ("alice", str(api_host.user("alice").uid)), probe
    assert probe["n"] == 21, f"the run saw n = {probe['n']}, 21 was passed"


def test_it_ran_in_a_transient_unit_with_the_runs_limits(alice, first_run):
    props = probe_props(printed(alice, first_run.id))
    wrong = {k: (props.get(k), v) for k, v in RUN_LIMITS.items() if props.get(k) != v}
    assert not wrong, f"unit properties (got, expected): {wrong}"


# ------------------------------------------------------------------------------ a kernel forked ahead
def warm_processes(host, user: str) -> int:
    """Processes of `user`'s warm runner: itself, and each run process and its kernel."""
    return len(host.run(f"pgrep -u {user} -f exec_api.services.warm").stdout.split())


@pytest.fixture(scope="module")
def warm_units(api_host, first_run) -> list[str]:
    """alice's warm runner once a kernel waits for her next run (runner, run process, kernel)."""

    def ready():
        return warm_processes(api_host, "alice") >= 3 and units_of(api_host, "exec-api-warm-*", "alice")

    return poll(ready, 60) or []


@pytest.fixture(scope="module")
def next_run(alice, probe_notebook, warm_units):
    time.sleep(1)  # the kernel answers its first request
    t0 = time.monotonic()
    ex = alice.wait(alice.run(notebook_id=probe_notebook.id, parameters={"n": 22}).id, timeout=120, poll=0.02)
    print(f"figure: alice's next run, submit -> succeeded seen by the client {time.monotonic() - t0:.3f} s")
    return ex


def test_a_kernel_waits_for_alices_next_run(warm_units):
    assert warm_units, "no exec-api-warm-* unit of alice's with a kernel forked ahead after 60 s"


def test_alices_next_run_runs_in_her_warm_runner(alice, first_run, next_run, warm_units):
    assert next_run.status == "succeeded", f"run {next_run.id}: {next_run.status} {next_run.error_message}"
    unit = printed(alice, next_run.id)["unit"]
    assert unit in warm_units and unit == printed(alice, first_run.id)["unit"], (unit, warm_units)


def test_the_next_run_is_alices_with_the_same_limits(alice, next_run):
    probe = printed(alice, next_run.id)
    props = probe_props(probe)
    wrong = {k: (props.get(k), v) for k, v in RUN_LIMITS.items() if props.get(k) != v}
    assert probe["user"] == "alice" and probe["n"] == 22 and not wrong, f"{probe['user']} n={probe['n']} {wrong}"


def test_the_next_run_does_not_wait_for_a_kernel_start(next_run):
    took = (next_run.completed_at - next_run.submitted_at).total_seconds()
    assert took < 1.0, f"submitted -> succeeded took {took:.3f} s (the exec API's own timestamps)"


def test_bob_has_no_warm_runner_before_a_run_of_his(api_host, next_run):
    assert not units_of(api_host, "exec-api-warm-*", "bob"), "a warm runner runs for bob, who ran nothing yet"


# ------------------------------------------------------------------------------ two users, no process shared
@pytest.fixture(scope="module")
def processes(alice, bob, notebook, next_run) -> dict:
    """alice's and bob's runs of the same notebook, twice each, interleaved."""
    for user in ("alice", "bob"):
        notebook(user, "processes.ipynb", [PROCESSES])
    got: dict = {"alice": [], "bob": []}
    for user, api in (("alice", alice), ("bob", bob), ("alice", alice), ("bob", bob)):
        ex = api.wait(api.run(path="processes.ipynb").id, timeout=300)
        assert ex.status == "succeeded", f"{user}'s run: {ex.status} {ex.error_message}"
        got[user].append(printed(api, ex.id))
    return got


def test_two_users_runs_never_share_a_process(processes):
    pids = {user: {pid for run in runs for pid in run["pids"]} for user, runs in processes.items()}
    units = {user: {run["unit"] for run in runs} for user, runs in processes.items()}
    assert not pids["alice"] & pids["bob"], f"processes in both users' runs: {pids['alice'] & pids['bob']}"
    assert len(units["alice"]) == len(units["bob"]) == 1 and units["alice"] != units["bob"], units
    assert all(run["user"] == user for user, runs in processes.items() for run in runs), processes


def test_every_run_is_a_fresh_kernel_in_a_fresh_process_group(processes):
    runs = processes["alice"]
    assert runs[0]["pids"][:2] != runs[1]["pids"][:2] and runs[0]["group"] != runs[1]["group"], runs
    assert all(run["group"] == run["pids"][1] for run in runs), "a kernel outside its run's process group"


def test_a_run_cannot_open_its_warm_runners_pipes_or_memory(processes):
    reached = {what for runs in processes.values() for run in runs for what in (run["fd"], run["mem"])}
    assert reached <= {"refused", "invisible"}, f"a run opening its warm runner's /proc fd/1 and mem: {reached}"


@pytest.fixture(scope="module")
def escaped(alice, api_host, notebook, processes) -> dict:
    notebook("alice", "escape.ipynb", [ESCAPE])
    api_host.run("rm -f /home/alice/notebooks/escaped.pid")
    ex = alice.wait(alice.run(path="escape.ipynb").id, timeout=300)
    pid = api_host.file("/home/alice/notebooks/escaped.pid")
    got = {"run": ex, "pid": pid.content_string.strip() if pid.exists else None}
    if got["pid"]:
        got["gone"] = poll(lambda: not api_host.file(f"/proc/{got['pid']}").exists, 10)
    return got


@pytest.fixture(scope="module")
def helper_run(alice, api_host, notebook, escaped):
    """A run of alice's whose helper left its process group, while another run of hers ends."""
    notebook("alice", "helper.ipynb", [HELPER])
    notebook("alice", "other.ipynb", ["open('other.ended', 'w').close()"])
    api_host.run("rm -f /home/alice/notebooks/helper.started /home/alice/notebooks/other.ended")
    eid = alice.run(path="helper.ipynb").id
    poll(lambda: api_host.file("/home/alice/notebooks/helper.started").exists, 60)
    other = alice.wait(alice.run(path="other.ipynb").id, timeout=120)
    return other, alice.wait(eid, timeout=120)


def test_a_live_runs_helper_outlives_another_runs_end(alice, helper_run):
    other, ex = helper_run
    assert other.status == "succeeded" and ex.status == "succeeded", (other, ex)
    assert printed_text(alice, ex.id) == "alive", "the end of one run killed a live run's helper"


def test_a_process_that_left_its_runs_group_ends_with_the_run(escaped):
    assert escaped["run"].status == "succeeded" and escaped["pid"], f"the escape run: {escaped['run']}"
    assert escaped["gone"], f"process {escaped['pid']}, started in its own session by a run, outlived the run"


# ------------------------------------------------------------------------------ bob and alice's things
def test_bob_cannot_see_alices_notebook(bob, probe_notebook):
    status = refusal(lambda: bob.notebook(probe_notebook.id))
    assert status in (403, 404), f"bob reading alice's notebook {probe_notebook.id}: {status or 'allowed'}"


def test_bob_cannot_run_alices_notebook(bob, probe_notebook):
    status = refusal(lambda: bob.run(notebook_id=probe_notebook.id))
    assert status in (403, 404), f"bob running alice's notebook {probe_notebook.id}: {status or 'allowed'}"


def test_bob_cannot_see_alices_execution(bob, first_run):
    status = refusal(lambda: bob.execution(first_run.id))
    assert status in (403, 404), f"bob reading alice's execution {first_run.id}: {status or 'allowed'}"


# ------------------------------------------------------------------------------ a run's sandbox
@pytest.fixture(scope="module")
def sandbox_run(alice, api_host, notebook, probe_notebook):
    notebook("alice", "sandbox.ipynb", [SANDBOX])
    api_host.run("rm -f /home/alice/notebooks/sandbox.written")
    return alice.wait(alice.run(path="sandbox.ipynb").id, timeout=300)


@pytest.fixture(scope="module")
def seen(alice, sandbox_run) -> dict:
    assert sandbox_run.status == "succeeded", f"the sandbox run: {sandbox_run.status} {sandbox_run.error_message}"
    return printed(alice, sandbox_run.id)


def test_a_run_in_the_sandbox_succeeds(sandbox_run):
    assert sandbox_run.status == "succeeded", f"run {sandbox_run.id}: {sandbox_run.status} {sandbox_run.error_message}"


def test_a_run_sees_only_its_own_home_under_home(seen):
    assert seen["homes"] == ["alice"], f"alice's run lists /home as {seen['homes']}"


def test_a_run_writes_in_its_home(api_host, seen):
    assert api_host.file("/home/alice/notebooks/sandbox.written").exists, f"no sandbox.written; the run saw {seen}"


def test_a_run_cannot_write_etc_or_the_installation_but_tmp(seen):
    writable = {"/etc": seen["etc"], "/opt/exec-api": seen["opt"], "/tmp": seen["tmp"]}
    assert writable == {"/etc": False, "/opt/exec-api": False, "/tmp": True}, f"writable by alice's run: {writable}"


def test_a_run_has_umask_077(seen):
    assert seen["umask"] == "0o77", f"a run's umask is {seen['umask']}"


def test_a_run_reaches_the_exec_api_and_the_database(seen):
    assert seen["api"] is True and seen["db"] is True, f"port 8000: {seen['api']}, port 5432: {seen['db']}"


# ------------------------------------------------------------------------------ fair share
@pytest.fixture(scope="module")
def flood(alice, bob, notebook, answers, sandbox_run) -> dict:
    """alice submits until she is told to wait; bob's one run meanwhile; then her backlog is
    cancelled (so the tests after this one do not wait behind it)."""
    notebook("alice", "short.ipynb", ["import time; time.sleep(n)"], "n = 3")
    notebook("bob", "quick.ipynb", ["print(n)"])
    got: dict = {"submitted": 0, "other": [], "refused": None}
    for _ in range(40):
        try:
            alice.run(path="short.ipynb")
            got["submitted"] += 1
        except ExecApiError as e:
            if e.status_code != 429:
                got["other"].append(str(e))
                continue
            got["refused"] = (e.detail, dict(answers["alice"].headers))
            break
    t0 = time.monotonic()
    got["bob"] = bob.wait(bob.run(path="quick.ipynb").id, timeout=300)
    got["bob_seconds"] = time.monotonic() - t0
    got["waiting"] = alice.history(status="queued", limit=1000)
    for ex in got["waiting"] + alice.history(status="running", limit=1000):
        refusal(lambda ex=ex: alice.cancel(ex.id))  # 409 for one that ended meanwhile
    got["still_running"] = poll(lambda: not alice.history(status="running"), 60, 1) is not True
    return got


def test_alices_submissions_are_queued_until_her_queue_is_full(flood):
    assert not flood["other"], f"after {flood['submitted']} queued submissions: {flood['other']}"
    assert flood["refused"] is not None, f"alice queued {flood['submitted']} runs and was never told to wait"


def test_the_429_says_how_many_wait_and_the_limit(flood):
    detail = flood["refused"][0] if flood["refused"] else None
    expected = f"has {MAX_QUEUED} waiting, the limit is {MAX_QUEUED}"
    assert expected in str(detail), f"the 429 says {detail!r}; expected it to say {expected!r}"


def test_the_429_says_when_to_retry(flood):
    headers = flood["refused"][1] if flood["refused"] else {}
    assert headers.get("retry-after", "").isdigit(), f"the 429's headers: {headers}"


def test_bobs_run_goes_before_alices_backlog(flood):
    bob_run = flood["bob"]
    print(f"figure: bob's run behind alice's backlog {flood['bob_seconds']:.1f} s")
    assert bob_run.status == "succeeded", f"bob's run: {bob_run.status} {bob_run.error_message}"
    assert len(flood["waiting"]) >= 10, f"only {len(flood['waiting'])} of alice's runs still waited after bob's ended"


def test_alices_flood_is_cancelled(flood):
    assert not flood["still_running"], "runs of alice's flood still running 60 s after they were cancelled"


# ------------------------------------------------------------------------------ paths outside the area
BAD_PATHS = ["/etc/passwd", "../bob/x.ipynb", "https://example.org/x.ipynb", "s3://bucket/x.ipynb"]


@pytest.fixture(scope="module")
def refused_paths(alice, api_host, flood) -> dict:
    before = (len(alice.history(limit=1000)), units_started(api_host))
    statuses = {bad: refusal(lambda bad=bad: alice.run(path=bad)) for bad in BAD_PATHS}
    after = (len(alice.history(limit=1000)), units_started(api_host))
    return {"statuses": statuses, "recorded": (before[0], after[0]), "units": (before[1], after[1])}


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_a_path_outside_alices_area_is_refused(refused_paths, bad):
    status = refused_paths["statuses"][bad]
    assert status is not None and 400 <= status < 500, f"run of {bad!r}: {status or 'accepted'}"


def test_nothing_is_recorded_for_refused_paths(refused_paths):
    before, after = refused_paths["recorded"]
    assert before == after, f"alice's executions: {before} before the refused paths, {after} after"


def test_no_unit_starts_for_refused_paths(refused_paths):
    before, after = refused_paths["units"]
    assert before == after, f"runs started by the launcher: {before} before the refused paths, {after} after"


# ------------------------------------------------------------------------------ limits
def memory_limits_enforced(host) -> bool:
    """False on a host whose systemd cannot write the memory controller (nspawn on cgroup v1)."""
    for line in host.check_output("cat /proc/self/mounts").splitlines():
        _dev, where, fstype, opts = line.split()[:4]
        if fstype == "cgroup2" and where == "/sys/fs/cgroup":
            return True
        if fstype == "cgroup" and where.endswith("/memory"):
            return "rw" in opts.split(",")
    return False


def test_a_run_over_its_memory_limit_ends_failed(alice, api_host, refused_paths):
    if not memory_limits_enforced(api_host):
        pytest.skip("this host's memory cgroup controller is read-only (a systemd-nspawn machine on a cgroup-v1 "
                    "host): MemoryMax is recorded on the unit but not enforced")  # fmt: skip
    ex = alice.wait(alice.run(path="hog.ipynb", parameters={"n": 3000}).id, timeout=300)
    assert ex.status == "failed", f"a 3000 MiB run under a 2 GiB limit: {ex.status} {ex.error_message}"


@pytest.fixture(scope="module")
def over_time(alice, refused_paths):
    return alice.wait(alice.run(path="sleep.ipynb", parameters={"n": 60}, timeout_seconds=3).id, timeout=120)


def test_a_run_over_its_time_limit_ends_timed_out(over_time):
    assert over_time.status == "timed_out", f"a 60 s run with a 3 s limit: {over_time.status} {over_time.error_message}"


def test_the_service_is_healthy_after_it(alice, over_time):
    assert health(alice) == 200


# ------------------------------------------------------------------------------ kill -9 mid-run
@pytest.fixture(scope="module")
def killed(alice, api_host, over_time) -> dict:
    """A long run of alice's; its unit's exposure; then kill -9 of the service's process and
    what became of the run and alice's warm runner."""
    api_host.run(f"rm -f {SLEEP_UNIT}")
    eid = alice.run(path="sleep.ipynb", parameters={"n": 30}).id
    got: dict = {"running": poll(lambda: alice.execution(eid).status == "running", 30)}
    marker = api_host.file(SLEEP_UNIT)
    got["unit"] = poll(lambda: marker.exists and marker.content_string.strip(), 30)
    got["exposure"] = exposure(api_host, got["unit"]) if got["unit"] else None
    main_pid = api_host.check_output("systemctl show -p MainPID --value exec-api.service")
    api_host.check_output(f"kill -9 {main_pid}")
    time.sleep(1)

    def status_after() -> str | None:
        try:
            status = alice.execution(eid).status
        except (ExecApiError, httpx.TransportError):  # the API restarting: nginx answers 502
            return None
        return status if status in ("failed", "succeeded", "queued") else None

    got["status"] = poll(status_after, 90, 0.3)
    running = ("active", "activating", "deactivating")
    if got["unit"]:
        state = f"systemctl is-active {got['unit']}"
        got["orphan_ended"] = poll(lambda: api_host.run(state).stdout.strip() not in running, 30, 1)
    got["warm_ended"] = poll(lambda: not units_of(api_host, "exec-api-warm-*", "alice"), 30, 1)
    got["health"] = poll(lambda: health(alice) == 200 and 200, 60, 1)
    return got


def test_a_long_run_is_running(killed):
    assert killed["running"] and killed["unit"], f"the long run: running={killed['running']} unit={killed['unit']}"


def test_a_run_units_exposure_is_at_most_5(killed):
    score = killed["exposure"]
    assert score is not None and score <= USER_CODE_EXPOSURE, f"{killed['unit']}: exposure {score}"


def test_after_kill_9_the_run_is_not_left_running(killed):
    assert killed["status"], "after kill -9 and restart the run stayed running (or the API did not answer) for 90 s"


def test_the_orphaned_runs_warm_runner_ends_after_the_restart(killed):
    assert killed.get("orphan_ended"), f"{killed['unit']} still active 30 s after the restart"


def test_no_warm_runner_of_alices_outlives_the_killed_service(killed):
    assert killed["warm_ended"], "a warm runner of alice's is still active 30 s after the service was killed"


def test_the_service_comes_back(killed):
    assert killed["health"] == 200, "no /health answer within 60 s of the kill"
