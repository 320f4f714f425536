"""The hostile-tenant suite: alice, logged in, with Python and a terminal, tries what a curious or
hostile platform user would. Each test is one attack, run from inside her own server unit (a
kernel reached through the hub, as JupyterLab reaches it) or inside an exec API run, or reads the
host's state as root where the attack is against the host's configuration.

Every test fails while the hole it names is open.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import time
import uuid

import pytest
import requests
from hostlib import exposure, unit_props, until

pytestmark = pytest.mark.tenant

# systemd-analyze security: our service units at most 4.0; units that run user code at most 5.0.
SERVICE_EXPOSURE = 4.0
USER_CODE_EXPOSURE = 5.0
SERVICE_UNITS = ["exec-api.service", "exec-api-launcher@probe.service", "jupyterhub.service",
                 "configurable-http-proxy.service", "superset.service", "test-oidc-provider.service",
                 "postgresql@*-main.service", "redis-server.service", "exec-api-retention.service"]  # fmt: skip


# ------------------------------------------------------------------------- users' files
def test_bob_cannot_read_alice_home(alice, bob):
    tag = uuid.uuid4().hex
    alice.run(f"open(os.path.expanduser('~/private-note.txt'), 'w').write('alice only {tag}')\n"
              "import IPython; IPython.get_ipython().history_manager.store_inputs(1, 'secret_cell = 1')")  # fmt: skip
    tried = bob.json("""
out = {}
for p in ["/home/alice", "/home/alice/private-note.txt", "/home/alice/notebooks",
          "/home/alice/.ipython/profile_default/history.sqlite", "/home/alice/.local/share/jupyter"]:
    try:
        out[p] = sorted(os.listdir(p))[:5] if os.path.isdir(p) else open(p, "rb").read(64).hex()
    except OSError as e:
        out[p] = None
print(json.dumps(out))""")
    read = {path: what for path, what in tried.items() if what is not None}
    assert not read, f"bob read alice's files: {read}"


def test_files_alice_makes_are_private(alice, site):
    modes = alice.json("""
os.makedirs(os.path.expanduser("~/newdir"), exist_ok=True)
open(os.path.expanduser("~/newfile"), "w").write("x")
print(json.dumps({p: oct(os.stat(os.path.expanduser(p)).st_mode & 0o777) for p in ["~/newdir", "~/newfile"]}))""")
    home = site.file("/home/alice")
    # The group bits of a home with an ACL show its mask; the owning group is alice's own.
    assert home.mode & 0o007 == 0 and home.group == "alice", f"/home/alice is {oct(home.mode)} {home.group}"
    assert modes == {"~/newdir": "0o700", "~/newfile": "0o600"}, f"alice's server creates files as {modes}"


def test_alice_finds_no_secret_anywhere_she_can_read(alice, secret_values):
    """Every file alice can read on the host, and every process's command line and environment."""
    found = alice.json(
        f"SECRETS = {json.dumps(secret_values)}\n"
        + """
import glob
hits, seen = [], 0
def look(path, data):
    for name, value in SECRETS.items():
        if value.encode() in data:
            hits.append([path, name])
for top in ["/etc", "/opt", "/srv", "/var", "/run", "/tmp", "/home", "/root", "/usr/local", "/dev/shm"]:
    for d, dirs, files in os.walk(top):
        dirs[:] = [x for x in dirs if x not in ("site-packages", "__pycache__", "node_modules", "proc")]
        for f in files:
            p = os.path.join(d, f)
            try:
                if os.path.islink(p) or not os.path.isfile(p) or os.path.getsize(p) > 4 << 20:
                    continue
                with open(p, "rb") as fh:
                    look(p, fh.read()); seen += 1
            except OSError:
                pass
for p in glob.glob("/proc/[0-9]*/cmdline") + glob.glob("/proc/[0-9]*/environ"):
    try:
        look(p, open(p, "rb").read()); seen += 1
    except OSError:
        pass
print(json.dumps({"hits": hits, "seen": seen}))""",
        timeout=600,
    )
    assert found["seen"] > 100, f"alice read only {found['seen']} files: the walk did not run"
    assert not found["hits"], f"alice read secrets (path, secret name): {found['hits']}"


def test_journal_holds_no_secret(site, secret_values):
    journal = site.run("journalctl --no-pager -o cat").stdout
    leaked = sorted(name for name, value in secret_values.items() if value in journal)
    assert not leaked, f"the journal holds these secrets: {leaked}"


# ------------------------------------------------------------------------- local sockets
def test_alice_cannot_talk_to_redis(alice):
    answers = alice.json("""
import glob, socket
out = {}
targets = [("tcp", ("127.0.0.1", 6379)), ("tcp", ("::1", 6379))]
targets += [("unix", p) for p in glob.glob("/run/redis*/*.sock") + glob.glob("/var/run/redis*/*.sock")]
for kind, addr in targets:
    s = socket.socket(socket.AF_UNIX if kind == "unix" else (socket.AF_INET6 if ":" in addr[0] else socket.AF_INET))
    s.settimeout(3)
    try:
        s.connect(addr); s.sendall(b"PING\\r\\n"); out[str(addr)] = s.recv(64).decode(errors="replace")
    except OSError as e:
        out[str(addr)] = type(e).__name__
    finally:
        s.close()
print(json.dumps(out))""")
    pong = {addr: a for addr, a in answers.items() if a.startswith(("+PONG", "-NOAUTH"))}
    assert not pong, f"alice reached Redis (Superset's pickled cache): {pong}"


# Every TCP listener of the all-in-one host, by the unit that owns it, and who may connect.
LISTENERS = {
    "ssh.service": "sshd (test harness: root's key only)",
    "nginx.service": "80 redirects to https; 443 TLS, each site authenticates its users",
    "test-oidc-provider.service": "the test OpenID provider (test harness; only nginx's address may reach it)",
    "postgresql@*-main.service": "PostgreSQL on loopback (scram-sha-256, one role per service)",
    "exec-api.service": "exec API on loopback (bearer token)",
    "configurable-http-proxy.service": "proxy API (token) and public port (the hub and servers authenticate)",
    "jupyterhub.service": "the hub on loopback (API tokens; pages take a login)",
    "superset.service": "Superset's gunicorn on loopback (login or token)",
}
# Users' own units: their server (hub token) and kernels (messages signed with a per-kernel key).
USER_UNIT = re.compile(r"^(jupyter-[a-z0-9_-]+-singleuser|exec-api-warm-[0-9a-f]{12})\.service$")


def test_every_listener_is_known(site):
    out = site.check_output("ss -H -ltnpe")
    unknown = []
    for line in out.splitlines():
        unit = re.search(r"cgroup:\S*/([^/\s]+)", line)
        name = unit.group(1) if unit else "?"
        if any(fnmatch.fnmatchcase(name, known) for known in LISTENERS):
            continue
        uid = re.search(r"\buid:(\d+)", line)
        if USER_UNIT.match(name) and uid and int(uid.group(1)) >= 1000:
            continue
        unknown.append(f"{line.split()[3]} {name}")
    assert not unknown, f"listening TCP sockets nobody reviewed: {unknown}"


def test_local_http_services_refuse_alice_without_credentials(alice, site):
    probes = {
        "hub API": "http://127.0.0.1:8081/hub/api/users",
        "proxy API": "http://127.0.0.1:8001/api/routes",
        "exec API": "http://127.0.0.1:8000/db/notebooks",
        "Superset API": "http://127.0.0.1:8088/api/v1/database/",
    }
    statuses = alice.json(
        f"PROBES = {json.dumps(probes)}\n"
        + """
out = {}
for name, url in PROBES.items():
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            out[name] = r.status
    except urllib.error.HTTPError as e:
        out[name] = e.code
    except OSError as e:
        out[name] = type(e).__name__
print(json.dumps(out))"""
    )
    open_ = {name: s for name, s in statuses.items() if s == 200}
    assert not open_, f"alice got answers without credentials: {statuses}"


def test_alice_cannot_reach_the_test_provider_behind_nginx(alice, inventory, hostvars):
    """The test OpenID provider speaks plain HTTP and believes nginx's forwarded headers: only
    nginx may connect to it (test harness; a real provider is outside the platform)."""
    providers = inventory.get("oidc_test_provider", {}).get("hosts", [])
    if not providers:
        pytest.skip("no test OpenID provider in this scenario")
    address = hostvars[providers[0]]["ansible_host"]
    answer = alice.json(f"""
import socket
s = socket.socket(); s.settimeout(5)
try:
    s.connect(({address!r}, 3000)); s.sendall(b"GET /.well-known/openid-configuration HTTP/1.0\\r\\n\\r\\n")
    print(json.dumps(s.recv(64).decode(errors="replace")))
except OSError as e:
    print(json.dumps(type(e).__name__))
finally:
    s.close()""")
    assert not answer.startswith("HTTP/"), f"alice reached the provider at {address}:3000 directly: {answer!r}"


# ------------------------------------------------------------------------- units
def test_alice_server_unit_is_confined(site, alice):
    unit = "jupyter-alice-singleuser.service"
    score = exposure(site, unit)
    props = unit_props(site, unit, "ProtectSystem", "ProtectHome", "PrivateTmp", "NoNewPrivileges", "TasksMax",
                       "RestrictAddressFamilies", "UMask", "PrivateDevices")  # fmt: skip
    assert score <= USER_CODE_EXPOSURE, f"{unit} exposure {score} > {USER_CODE_EXPOSURE}; {props}"
    assert props["ProtectSystem"] == "strict" and props["ProtectHome"] == "tmpfs", props
    assert props["PrivateTmp"] == "yes" and props["NoNewPrivileges"] == "yes", props
    assert props["TasksMax"] != "infinity" and props["UMask"] == "0077", props


@pytest.mark.parametrize("unit", SERVICE_UNITS)
def test_service_unit_exposure(site, unit):
    # `systemctl is-enabled` of a unit that is not there: 1 on Debian 12, 4 on 13 (testinfra's
    # is_enabled accepts 0 or 1 only).
    if unit == "test-oidc-provider.service" and site.run("systemctl is-enabled --quiet %s", unit).rc != 0:
        pytest.skip("the test provider does not run on this host")
    if "*" in unit:  # PostgreSQL's unit is named after its major version
        unit = site.check_output("systemctl list-units --plain --no-legend %s", unit).split()[0]
    score = exposure(site, unit)
    assert score <= SERVICE_EXPOSURE, f"{unit}: exposure {score} > {SERVICE_EXPOSURE}"


def test_runs_slice_and_api_have_memory_and_task_limits(site):
    slice_ = unit_props(site, "exec-api-runs.slice", "MemoryMax", "TasksMax", "CPUQuotaPerSecUSec")
    api = unit_props(site, "exec-api.service", "MemoryMax")
    unlimited = {k: v for k, v in {**slice_, "exec-api MemoryMax": api["MemoryMax"]}.items() if v == "infinity"}
    assert not unlimited, f"no limit: {unlimited}"


def test_limits_are_enforced(site):
    pytest.skip(
        "the test hosts are systemd-nspawn machines on a cgroup-v1 (hybrid) machine whose memory, cpu and pids "
        "controllers are read-only inside: systemd records MemoryMax/TasksMax/CPUQuota but cannot enforce them "
        "(the unit properties are tested above)"
    )


def test_no_world_writable_file_in_platform_directories(site):
    """World-writable and within the world's reach: a directory others may not enter (such as
    uv's temporary directory, root's 0700, where uv leaves 0666 lock files) hides what is under
    it, and is pruned; alice's access(2) test below sees groups and ACLs too."""
    out = site.run("find /opt /etc /usr/local /var/lib -xdev -type d ! -perm -o+x -prune -o "
                   "\\( -type f -o -type d \\) -perm -o+w ! -perm -1000 -print 2>/dev/null "
                   "| head -20").stdout  # fmt: skip
    assert not out.strip(), f"world-writable (any user can change or flock them):\n{out}"


# Where the platform keeps what it runs and holds, and where processes meet (sockets, shared
# temporary directories, the other users' homes): alice's shell may write none of it.
SYSTEM_TREES = ["/opt", "/etc", "/usr", "/var", "/srv", "/home", "/run", "/tmp", "/dev/shm"]
# What every local user may write or connect to by design: the shared temporary directories
# (sticky), PostgreSQL's socket (pg_hba decides), D-Bus, systemd's and (Debian 13) sshd's local
# sockets (they check the caller).
OPEN_BY_DESIGN = ["/tmp", "/tmp/.*-unix", "/var/tmp", "/dev/shm", "/run/lock",
                  "/run/postgresql/.s.PGSQL.*", "/run/dbus/system_bus_socket", "/run/systemd/*",
                  "/run/ssh-unix-local/socket"]  # fmt: skip


def test_alice_in_her_own_shell_can_write_nothing_of_the_platform(alice, site):
    """As alice with a shell on the host (not in her confined server, whose /opt is read-only
    anyway): every file, directory, socket and FIFO root finds in these trees, asked of the kernel
    with access(2) under her ids: none may be writable to her (for a socket: connectable), by
    mode, group or ACL, other than her own and those open by design. Root lists the paths, so a
    directory she may enter but not list is checked too. The find above sees only the `other`
    bits; this one sees a group she is in and an ACL entry naming her. (The fixture started her
    server, so she has her account.)"""
    check = r"""
import fnmatch, os, sys
me, allowed = os.getuid(), sys.argv[1:]
paths = [p for p in sys.stdin.buffer.read().split(b"\0") if p]
found = []
for path in paths:
    try:
        st = os.lstat(path)
    except OSError:
        continue  # not hers to reach
    name = os.fsdecode(path)
    if st.st_uid == me or any(fnmatch.fnmatch(name, pattern) for pattern in allowed):
        continue
    if os.access(path, os.W_OK):
        found.append(name.encode("utf-8", "backslashreplace").decode())
print(len(paths), len(found))
print("\n".join(found[:30]))
"""
    out = site.run(
        f"find {' '.join(SYSTEM_TREES)} -xdev \\( -type f -o -type d -o -type s -o -type p \\) -print0 2>/dev/null"
        f" | runuser -u alice -- /usr/bin/python3 -I -c {shlex.quote(check)} {shlex.join(OPEN_BY_DESIGN)}"
    )
    assert out.rc == 0, f"the check as alice failed: {out.stderr}"
    head, *found = out.stdout.splitlines()
    checked, writable = map(int, head.split())
    assert checked > 10000, f"only {checked} paths were checked: the walk did not reach the trees"
    assert not writable, f"alice can write {writable} paths of the platform from her shell, e.g.:\n" + "\n".join(found)


# ------------------------------------------------------------------------- exec API
def test_hub_token_without_the_exec_api_scope_is_refused(hubs, api_url, ca, api_token):
    narrow = hubs["alice"].new_token(["read:users:name!user=alice"], "no exec API scope")
    unscoped = hubs["alice"].token  # made without scopes: the hub's default token role
    statuses = {}
    for name, tok in {"narrow": narrow, "unscoped": unscoped, "full": api_token}.items():
        r = requests.get(f"{api_url}/db/notebooks", headers={"Authorization": f"Bearer {tok}"}, verify=ca, timeout=30)
        statuses[name] = (r.status_code, r.text[:200])
    assert statuses["full"][0] == 200, f"a token with the exec API's scope must work (control): {statuses}"
    refused = {name: s for name, (s, _) in statuses.items() if name != "full" and s not in (401, 403)}
    assert not refused, f"a token without the exec API's scope was accepted: {statuses}"


def test_non_finite_numbers_get_a_client_error(api_url, ca, api_token):
    headers = {"Authorization": f"Bearer {api_token}", "Content-Type": "application/json"}
    got = {}
    for literal in ("NaN", "Infinity", "1e999"):
        body = f'{{"notebook_path": "nan.ipynb", "parameters": {{"x": {literal}}}}}'
        r = requests.post(f"{api_url}/db/executions", data=body, headers=headers, verify=ca, timeout=30)
        got[literal] = (r.status_code, r.text[:200])
    bad = {k: v for k, v in got.items() if v[0] != 422 or "non-finite" not in v[1]}
    assert not bad, f"non-finite numbers must get 4xx with a message: {got}"


def test_registration_race_never_registers_bobs_notebook(alice, bob):
    """alice swaps her notebook for a symlink to bob's while registering it (a bounded race)."""
    marker = f"bob-{uuid.uuid4().hex}"
    bob.run(f"notebook('race-secret.ipynb', ['print(1)'], parameters={f'secret = {marker!r}'!r})")
    result = alice.json(
        f"MARKER = {marker!r}\n"
        + """
import threading, time
notebook("race-mine.ipynb", ["print(1)"], parameters="mine = 1")
area = os.path.expanduser("~/notebooks")
stop = False
def swap():
    link, real = os.path.join(area, "race.ipynb"), os.path.join(area, "race-mine.ipynb")
    while not stop:
        for make in (lambda: os.symlink("/home/bob/notebooks/race-secret.ipynb", link + ".tmp"),
                     lambda: os.link(real, link + ".tmp")):
            try:
                make(); os.replace(link + ".tmp", link)
            except OSError:
                pass
t = threading.Thread(target=swap, daemon=True); t.start()
statuses, leaks, t0, n = {}, [], time.monotonic(), 0
while n < 400 and time.monotonic() - t0 < 60:
    n += 1
    s, body = call("POST", "/db/notebooks", {"name": f"race-{n}", "file_path": "race.ipynb"})
    statuses[s] = statuses.get(s, 0) + 1
    if s == 201:
        if MARKER in json.dumps(body):
            leaks.append(body.get("id"))
        call("DELETE", f"/db/notebooks/{body['id']}")
stop = True; t.join()
print(json.dumps({"tries": n, "statuses": statuses, "leaks": leaks}))""",
        timeout=180,
    )
    assert result["tries"] >= 50, f"too few attempts to mean anything: {result}"
    assert not result["leaks"], f"bob's notebook was registered under alice: {result}"
    assert not any(int(s) >= 500 for s in result["statuses"]), f"server errors during the race: {result}"


def test_alice_cannot_flood_the_queue(alice, bob):
    """50 quick submissions by alice: she is told to wait (429), and bob's one run still starts first."""
    result = alice.json("""
notebook("flood.ipynb", ["import time; time.sleep(n)"], parameters="n = 5")
got = {}
ids = []
for i in range(50):
    s, body = call("POST", "/db/executions", {"notebook_path": "flood.ipynb", "parameters": {"n": 5}})
    got[s] = got.get(s, 0) + 1
    if s == 202:
        ids.append(body["execution_id"] if "execution_id" in body else body.get("id"))
    elif s == 429:
        last429 = body
print(json.dumps({"statuses": got, "ids": ids, "message": (last429 if 429 in got else None)}))""")
    try:
        t0 = time.monotonic()
        bob_state = bob.json(
            """
notebook("quick.ipynb", ["print('bob ran')"])
print(json.dumps(run_and_wait("quick.ipynb")))""",
            timeout=180,
        )
        waited = time.monotonic() - t0
    finally:  # alice's backlog must not slow the tests after this one
        alice.run("for i in " + json.dumps(result["ids"]) + ": call('POST', f'/db/executions/{i}/cancel')", 300)
    assert "429" in result["statuses"], f"alice queued 50 runs without being told to wait: {result['statuses']}"
    assert bob_state["status"] == "succeeded", f"bob's run: {bob_state}"
    assert waited < 60, f"bob's run waited {waited:.0f} s behind alice's backlog"


def test_an_oversized_output_fails_the_run_and_is_not_served(alice, site):
    env = site.check_output("cat /etc/exec-api/exec-api.env")
    match = re.search(r"^EXEC_API_MAX_OUTPUT_BYTES=(\d+)", env, re.M)
    assert match, "the exec API has no output size cap (EXEC_API_MAX_OUTPUT_BYTES)"
    cap = int(match.group(1))
    result = alice.json(f"""
notebook("big.ipynb", ["print('x' * ({cap} + (1 << 20)))"])
ex = run_and_wait("big.ipynb")
so, out = call("GET", f"/db/executions/{{ex['id']}}/output")
print(json.dumps({{"ex": ex, "output_status": so, "output_len": len(out) if isinstance(out, str) else -1}}))""",
                          timeout=300)  # fmt: skip
    ex = result["ex"]
    assert ex["status"] == "failed", f"a run with a {cap + (1 << 20)}-byte output: {ex['status']}"
    assert "limit" in (ex.get("error_message") or ""), f"the failure does not say why: {ex.get('error_message')}"
    assert result["output_status"] != 200, f"the oversized output was served: {result}"


def test_a_run_unit_is_confined(alice, site):
    alice.run("""
notebook("where.ipynb", ["import os, re, time\\n"
    "unit = re.search(r'(exec-api-[a-z]+-[^/\\\\n]+\\\\.service)', open('/proc/self/cgroup').read()).group(1)\\n"
    "open(os.path.expanduser('~/notebooks/where.unit'), 'w').write(unit)\\n"
    "time.sleep(40)"])
if os.path.exists(os.path.expanduser("~/notebooks/where.unit")): os.remove(os.path.expanduser("~/notebooks/where.unit"))
s, sub = call("POST", "/db/executions", {"notebook_path": "where.ipynb", "parameters": {}})
assert s == 202, (s, sub)""")
    marker = site.file("/home/alice/notebooks/where.unit")
    unit = until(lambda: marker.exists and marker.content_string.strip(), 90, "the run to start")
    score = exposure(site, unit)
    props = unit_props(site, unit, "ProtectSystem", "ProtectHome", "PrivateTmp", "NoNewPrivileges", "TasksMax", "UMask")
    assert score <= USER_CODE_EXPOSURE, f"{unit}: exposure {score} > {USER_CODE_EXPOSURE}; {props}"
    assert props["ProtectSystem"] == "strict" and props["ProtectHome"] == "tmpfs" and props["UMask"] == "0077", props


# ------------------------------------------------------------------------- web
def test_hub_cookies_are_secure(hub_url, ca):
    r = requests.get(f"{hub_url}/hub/oauth_login", verify=ca, timeout=30, allow_redirects=False)
    cookies = r.raw.headers.getlist("Set-Cookie")
    assert cookies, f"the hub set no cookie on /hub/oauth_login (HTTP {r.status_code})"
    insecure = [c.split(";")[0].split("=")[0] for c in cookies if "secure" not in c.lower()]
    assert not insecure, f"hub cookies without Secure: {insecure}"


def test_superset_sends_each_security_header_once(domain, names, ca):
    r = requests.get(f"https://superset.{domain}/login/", verify=ca, timeout=30, allow_redirects=False)
    headers = ["Strict-Transport-Security", "X-Frame-Options", "X-Content-Type-Options", "Content-Security-Policy"]
    counts = {h: len(r.raw.headers.getlist(h)) for h in headers}
    twice = {h: n for h, n in counts.items() if n > 1}
    assert counts["Strict-Transport-Security"] == 1 and not twice, f"security headers: {counts}"
