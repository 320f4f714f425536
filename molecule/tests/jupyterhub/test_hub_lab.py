"""alice's own server, from her login to the hub's restart: she logs in and spawns from the form in a
real browser and JupyterLab loads; behind the page, her server is driven through the hub's REST API
and a kernel in it (the protocol JupyterLab speaks, hostlib.Kernel), and read on the hub's host as
root (testinfra): its unit, its sandbox, the files it writes, the tokens it holds.

The tests run in the order they are written, and that order matters:
  1. the browser: login, spawn form, JupyterLab, cookies (module fixture `lab`);
  2. the hub's API: admin flag, a refused profile, start timings (these stop and start the server);
  3. from a kernel in the running server: a notebook run through the exec API (`exec_api_run`), the
     server's token; on the host: the unit, its namespace and umask, homes and files, tokens;
  4. 10 quick stop -> start rounds (the kernels of step 3 end with them);
  5. the hub restarted with the server running (module fixture `restarted`): the same server
     process, a kernel opened before still answering, the lab page in the same browser session;
  6. logging out, last: it ends the browser's hub session and the provider's.
"""

from __future__ import annotations

import json
import re
import shlex
import statistics
import time
from dataclasses import dataclass

import pytest
import requests
from hostlib import Hub, exposure, notebook, until
from hostlib import unit_props as show
from hublib import hub_login, server_unit, to_bytes

USER = "alice"
SERVICE_EXPOSURE = 4.0  # the proxy's and the hub's units
USER_CODE_EXPOSURE = 5.0  # a user's server runs the user's code


@pytest.fixture(scope="module")
def hub(hubs) -> Hub:
    return hubs[USER]


@pytest.fixture(scope="module")
def mine(setting, users, users_group) -> list[str]:
    """The profiles alice may pick (those of her groups), in the role's order."""
    return [p["name"] for p in setting("profiles") if set(p["groups"]) & set(users[USER]["groups"])]


def stop(hub: Hub, timeout: float = 120) -> None:
    r = hub.api("DELETE", f"/users/{USER}/server")
    assert r.status_code in (202, 204, 400), f"stopping {USER}'s server: HTTP {r.status_code} {r.text[:300]}"
    until(lambda: hub.server() is None, timeout, f"{USER}'s server to stop")


def start(hub: Hub, profile: str, timeout: float) -> float:
    """Start alice's server through the hub's API (as the spawn page does); seconds until ready.
    A server that disappears while starting (the spawn failed) fails at once."""
    t0 = time.monotonic()
    r = hub.api("POST", f"/users/{USER}/server", json={"profile": profile})
    assert r.status_code in (201, 202), f"starting {USER}'s server: HTTP {r.status_code} {r.text[:300]}"

    def ready() -> bool:
        server = hub.server()
        assert server is not None, f"{USER}'s server is gone while starting (the spawn failed: the hub's journal)"
        return server.get("ready")

    until(ready, timeout, f"{USER}'s server to be ready", step=0.2)
    return time.monotonic() - t0


# ------------------------------------------------------------------------- 1. the browser
@dataclass
class Lab:
    context: object
    page: object
    login_seconds: float  # the hub's login, the provider's form, back to the hub
    landed: str  # where the hub took her after logging in
    offered: list[str]  # the profiles the spawn form offered
    lab_seconds: float  # from the login to JupyterLab loaded (spawn included)


@pytest.fixture(scope="module")
def lab(browser, hub_url, users, hub):
    """alice's browser: logged in through the provider's form (with no server running, so the hub
    shows the spawn form), then the form submitted and JupyterLab loaded. Kept for the tests after
    the hub's restart and the logout."""
    if hub.server() is not None:
        print(f"note: {USER} had a server left from an earlier run: stopped")
        stop(hub)
    t0 = time.monotonic()
    login = hub_login(browser, hub_url, users[USER])
    landed = login.page.url
    offered = login.offered_profiles(hub_url) if landed.startswith(f"{hub_url}/hub/spawn") else []
    login.page.click("#spawn_form [type=submit]")
    login.page.wait_for_url(f"{hub_url}/user/{USER}/lab**", timeout=180000)
    login.page.wait_for_selector(".jp-LauncherCard, .jp-DirListing", timeout=120000)
    yield Lab(login.context, login.page, login.seconds, landed, offered, time.monotonic() - t0)
    login.context.close()


def test_alice_lands_on_the_spawn_form_after_logging_in(lab, hub_url):
    print(f"figure: login through the provider's form {lab.login_seconds:.2f} s")
    assert lab.landed.startswith(f"{hub_url}/hub/spawn"), f"{USER} logged in and landed on {lab.landed}"


def test_alice_is_offered_only_her_groups_profiles(lab, mine):
    assert lab.offered == mine, f"{USER}'s spawn form offers {lab.offered}"


def test_jupyterlab_loads_after_spawning_from_the_form(lab, hub_url):
    print(f"figure: login to JupyterLab (spawn included) {lab.lab_seconds:.2f} s")
    assert lab.page.url.startswith(f"{hub_url}/user/{USER}/lab"), lab.page.url
    assert lab.page.locator(".jp-LauncherCard, .jp-DirListing").first.is_visible(), "JupyterLab shows nothing"


def test_every_cookie_the_hub_sets_is_secure(lab, hub_url):
    """The hub's session and OAuth cookies, its _xsrf and the server's login cookie (TLS ends at
    nginx); the server's own _xsrf (path /user/<name>/) follows jupyter_server and is only shown."""
    jar = lab.context.cookies([f"{hub_url}/hub/", f"{hub_url}/hub/api/", f"{hub_url}/user/{USER}/",
                               f"{hub_url}/user/{USER}/lab"])  # fmt: skip
    servers_xsrf = [c for c in jar if c["name"] == "_xsrf" and c["path"].startswith("/user/")]
    hubs_own = [c for c in jar if c not in servers_xsrf]
    print(f"note: the server's own _xsrf cookie Secure: {[c['secure'] for c in servers_xsrf]}")
    insecure = [f"{c['name']} ({c['path']})" for c in hubs_own if not c["secure"]]
    assert hubs_own and not insecure, f"cookies {sorted(c['name'] for c in hubs_own)}; not Secure: {insecure}"


# ------------------------------------------------------------------------- 2. the hub's API
def test_alice_is_no_admin_and_her_groups_come_from_the_provider(lab, hub, users, users_group):
    r = hub.api("GET", "/user")
    me = r.json() if r.ok else {}
    assert r.ok and me["admin"] is False and users_group in me["groups"], (
        f"GET /hub/api/user as {USER} (groups at the provider {users[USER]['groups']}): HTTP {r.status_code}, "
        f"admin {me.get('admin')}, groups {me.get('groups')}"
    )


def test_a_profile_outside_alices_groups_is_refused(lab, hub, setting, mine):
    others = [p["name"] for p in setting("profiles") if p["name"] not in mine]
    if not others:
        pytest.skip(f"every profile is open to {USER}'s groups")
    stop(hub)
    r = hub.api("POST", f"/users/{USER}/server", json={"profile": others[0]})
    until(lambda: hub.server() is None, 60, f"no server of {USER} after asking for {others[0]}")
    assert r.status_code >= 400, f"{USER} asked for profile {others[0]}: HTTP {r.status_code} {r.text[:300]}"


def test_server_start_to_ready_timings(hub, mine):
    """Figures only: stop, start through the hub's API, ready; three times."""
    times = []
    for _ in range(3):
        if hub.server() is not None:
            stop(hub)
        times.append(start(hub, mine[0], 180))
    each = ", ".join(f"{t:.2f}" for t in times)
    print(f"figure: start server -> ready, median of 3: {statistics.median(times):.2f} s (each: {each})")


# ------------------------------------------------------------------------- 3. inside the running server
STAMP = time.strftime("%Y%m%d%H%M%S")
# Saved as JupyterLab saves: the server's contents API. The report takes a parameter, writes who ran
# it and what it computed into alice's notebook area; the driver registers and runs it through the
# exec API with the `exec-api` command line, which uses the server's own token.
REPORT = notebook([
    "import getpass, pathlib\nresult = x + 22\n"
    "pathlib.Path.home().joinpath('notebooks', 'hub-check-ran.txt').write_text(f'{getpass.getuser()} {result}')\n"
    "print(result)",
], parameters="# parameters\nx = 20")  # fmt: skip
DRIVER = (
    "import getpass, json, os, subprocess\n"
    "print('whoami: ' + getpass.getuser(), flush=True)\n"
    f"reg = subprocess.run(['exec-api', 'register', 'hub-check-report-{STAMP}.ipynb', '--name', 'hc-{STAMP}'],\n"
    "                     capture_output=True, text=True)\n"
    "print('register rc', reg.returncode, reg.stderr[-500:])\n"
    "nid = json.loads(reg.stdout)['id']\n"
    "run = subprocess.run(['exec-api', 'run', '--id', str(nid), '-p', 'x=100', '--wait',\n"
    "                      '-o', os.path.expanduser('~/notebooks/hub-check-report.out.ipynb')],\n"
    "                     capture_output=True, text=True)\n"
    "print('exec-api run rc', run.returncode, run.stdout[-800:], run.stderr[-800:])\n"
    "print('EXEC-DONE ' + str(run.returncode))"
)


def save(hub: Hub, path: str, content: dict) -> None:
    r = hub.http.put(f"{hub.url}/user/{USER}/api/contents/{path}", timeout=60,
                     json={"type": "notebook", "format": "json", "content": content})  # fmt: skip
    assert r.status_code in (200, 201), f"saving {path} through {USER}'s server: HTTP {r.status_code} {r.text[:300]}"


@pytest.fixture(scope="module")
def kernel(hub, mine):
    """A kernel in alice's running server, as JupyterLab opens one."""
    hub.start(mine[0])
    k = hub.kernel()
    yield k
    try:
        k.close()
    except Exception as e:  # the server was stopped by later tests: nothing left to close
        print(f"note: closing the kernel: {e}")


@pytest.fixture(scope="module")
def exec_api_run(hub, kernel) -> str:
    """The notebooks saved into alice's area, then the driver's cell run in her kernel: what it printed."""
    save(hub, f"notebooks/hub-check-report-{STAMP}.ipynb", REPORT)
    save(hub, "notebooks/hub-check.ipynb", notebook([DRIVER]))
    t0 = time.monotonic()
    printed = kernel.run(DRIVER, timeout=300)
    print(f"figure: the notebook run through the exec API from alice's kernel {time.monotonic() - t0:.2f} s")
    return printed


def test_kernel_in_alices_server_runs_as_alice(exec_api_run):
    assert f"whoami: {USER}\n" in exec_api_run, f"the kernel printed: {exec_api_run[:500]}"


def test_alice_runs_a_notebook_through_the_exec_api_from_her_server(exec_api_run):
    assert "EXEC-DONE 0" in exec_api_run, f"the exec-api command line in {USER}'s kernel: {exec_api_run[-1500:]}"


def test_exec_api_run_wrote_its_output_into_alices_home(exec_api_run, site):
    ran = site.file("/home/alice/notebooks/hub-check-ran.txt")
    out = site.file("/home/alice/notebooks/hub-check-report.out.ipynb")
    owners = {f.path: f.user if f.exists else None for f in (ran, out)}
    assert owners == {ran.path: USER, out.path: USER}, f"owners: {owners}"
    # x = 100 from the driver, not the notebook's 20: the parameter given in the lab reached the run.
    assert ran.content_string == f"{USER} 122", f"{ran.path}: {ran.content_string!r}"


# What the hub says of the token in $JUPYTERHUB_API_TOKEN (in a kernel: the server's own token).
SCOPES = """
import json, os, urllib.request
req = urllib.request.Request(os.environ["JUPYTERHUB_API_URL"] + "/user",
                             headers={"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]})
print(json.dumps(json.load(urllib.request.urlopen(req, timeout=30)).get("scopes", [])))
"""


def test_servers_token_carries_the_exec_api_scope(kernel, setting):
    """The token `exec-api` in the lab uses, asked of the hub by the kernel itself (it never leaves
    alice's server)."""
    scopes = kernel.json(SCOPES)
    assert setting("exec_api_scope") in scopes, f"the server's token has the scopes {scopes}"


def token_scopes(hub_url: str, ca: str, token: str) -> list[str]:
    r = requests.get(f"{hub_url}/hub/api/user", headers={"Authorization": f"token {token}"}, verify=ca, timeout=30)
    assert r.status_code == 200, f"GET /hub/api/user: HTTP {r.status_code}"
    return r.json().get("scopes", [])


def test_token_made_by_the_jupyterhub_token_command_lacks_the_exec_api_scope(site, setting):
    """`jupyterhub token alice` run like the hub (its environment file and configuration); the token
    is used on the host and never printed."""
    venv = f"{setting('home')}/venv"
    make = (
        "systemd-run --quiet --wait --pipe --collect --property=EnvironmentFile=/etc/jupyterhub/jupyterhub.env "
        f"--property=WorkingDirectory=/var/lib/jupyterhub {venv}/bin/jupyterhub token "
        f"--JupyterHub.config_file=/etc/jupyterhub/jupyterhub_config.py {USER} | tail -n 1"
    )
    ask = f"{venv}/bin/python3 -c {shlex.quote(SCOPES)}"
    api = f"http://127.0.0.1:{setting('hub_port')}/hub/api"
    out = site.run(f"JUPYTERHUB_API_TOKEN=$({make}) JUPYTERHUB_API_URL={api} {ask}")
    assert out.rc == 0, f"`jupyterhub token {USER}`, then GET /hub/api/user: exit {out.rc}: {out.stderr[-800:]}"
    scopes = json.loads(out.stdout.strip().splitlines()[-1])
    custom = [s for s in scopes if s.startswith("custom:")]
    assert scopes and not custom, f"a token made by `jupyterhub token {USER}` has {len(scopes)} scopes, custom {custom}"


def test_token_alice_creates_without_scopes_lacks_the_exec_api_scope(hub, hub_url, ca, setting):
    made = hub.new_token(None, "no scopes asked")
    scopes = {"made in the browser": token_scopes(hub_url, ca, hub.token), "made through the API": token_scopes(
        hub_url, ca, made)}  # fmt: skip
    holding = [how for how, s in scopes.items() if setting("exec_api_scope") in s]
    assert not holding, f"tokens made without scopes that hold {setting('exec_api_scope')}: {holding}"


def test_alice_may_ask_for_the_exec_api_scope_explicitly(hub, hub_url, ca, setting):
    scopes = token_scopes(hub_url, ca, hub.new_token([setting("exec_api_scope")], "exec API"))
    assert setting("exec_api_scope") in scopes, f"a token asked with the exec API's scope has {scopes}"


# ------------------------------------------------------------------------- 3. on the host
SANDBOX = {
    "UMask": "0077", "ProtectSystem": "strict", "ProtectHome": "tmpfs", "CapabilityBoundingSet": "",
    "RestrictNamespaces": "yes", "RestrictSUIDSGID": "yes", "RestrictRealtime": "yes", "LockPersonality": "yes",
    "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes", "SystemCallArchitectures": "native", "PrivateTmp": "yes", "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
}  # fmt: skip


@pytest.fixture
def unit(site, kernel) -> str:
    """alice's running server unit (with the kernel above in it)."""
    return server_unit(site, USER)


def test_alices_server_runs_as_alice_with_the_profiles_limits(site, unit, setting, mine):
    profile = next(p for p in setting("profiles") if p["name"] == mine[0])
    props = show(site, unit, "ActiveState", "User", "MemoryMax", "CPUQuotaPerSecUSec")
    uid = str(site.user(USER).uid)  # SystemdSpawner names the user by uid
    expected = {"ActiveState": "active", "MemoryMax": str(to_bytes(profile["mem_limit"])),
                "CPUQuotaPerSecUSec": f"{int(float(profile['cpu_limit']))}s"}  # fmt: skip
    wrong = {k: props.get(k) for k, v in expected.items() if props.get(k) != v}
    assert props["User"] in (USER, uid) and not wrong, f"{unit} with profile {profile['name']}: {props}"


def test_alices_server_has_the_sandbox_for_user_code(site, unit, setting):
    props = show(site, unit, *SANDBOX, "BindPaths", "TasksMax", "RestrictAddressFamilies", "InaccessiblePaths")
    wrong = {k: props.get(k) for k, v in SANDBOX.items() if props.get(k, "") != v}
    assert not wrong, f"{unit}: {wrong}"
    binds = [b.split(":")[:2] for b in props["BindPaths"].split()]
    assert [f"/home/{USER}"] * 2 in binds, f"{unit} BindPaths: {props['BindPaths']}"
    assert props["TasksMax"] not in ("", "infinity") and int(props["TasksMax"]) > 0, f"TasksMax {props['TasksMax']}"
    families = sorted(props["RestrictAddressFamilies"].split())
    assert families == ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"], f"RestrictAddressFamilies {families}"
    hidden = [p.removeprefix("-") for p in props["InaccessiblePaths"].split()]  # "-": missing ones ignored
    assert "/run/postgresql" in hidden, f"InaccessiblePaths {props['InaccessiblePaths']}"


def test_alices_server_sees_only_her_home_and_no_other_services_sockets(site, unit):
    pid = show(site, unit, "MainPID")["MainPID"]
    homes = site.check_output(f"nsenter -t {pid} -m ls -A /home").split()
    here = site.check_output("ls -A /run/postgresql").split()
    there = site.check_output(f"nsenter -t {pid} -m ls -A /run/postgresql").split()
    assert homes == [USER], f"/home in {unit}'s mount namespace: {homes}"
    assert here and not there, f"/run/postgresql on the host: {here}; in {unit}: {there}"


def test_every_process_of_alices_server_has_umask_0077(site, unit):
    """The server and its kernels (the one opened above at least)."""
    out = site.check_output(
        f"for p in $(ps -e -o pid=,unit= | awk '$2 == \"{unit}\" {{print $1}}'); do "
        "echo \"$(awk '/^Umask/ {print $2}' /proc/$p/status) $(tr '\\0' ' ' < /proc/$p/cmdline | cut -c1-100)\"; done"
    )
    procs = out.splitlines()
    loose = [p for p in procs if not p.startswith("0077 ")]
    assert len(procs) >= 2 and any("ipykernel" in p for p in procs), f"processes of {unit}: {procs}"
    assert not loose, f"processes of {unit} without umask 0077: {loose}"


def getfacl(site, path: str) -> str:
    return " ".join(site.check_output(f"getfacl -cp {path}").split())


def test_homes_are_private_and_the_exec_api_may_only_pass_through(site):
    """With ACLs the group bits show the mask; the owning group's own entry is ---."""
    for user in (USER, "bob"):
        home = site.file(f"/home/{user}")
        assert (oct(home.mode), home.user) == ("0o710", user), f"{home.path}: {oct(home.mode)} {home.user}"
    acl = getfacl(site, f"/home/{USER}")
    assert acl == "user::rwx user:exec-api:--x group::--- mask::--x other::---", f"/home/{USER}: {acl}"


def test_notebook_area_and_saved_notebooks_are_alices_and_the_exec_api_reads_them(site, exec_api_run):
    area, saved = f"/home/{USER}/notebooks", f"/home/{USER}/notebooks/hub-check.ipynb"
    modes = {p: (oct(site.file(p).mode), site.file(p).user) for p in (area, saved)}
    assert modes == {area: ("0o750", USER), saved: ("0o640", USER)}, f"modes: {modes}"
    acl_area, acl_saved = getfacl(site, area), getfacl(site, saved)
    assert acl_area.startswith("user::rwx user:exec-api:r-x group::--- mask::r-x other::--- default:user::rwx"), (
        f"{area}: {acl_area}"
    )
    assert re.match(r"user::rw- user:exec-api:r-x #effective:r-- group::--- mask::r-- other::---$", acl_saved), (
        f"{saved}: {acl_saved}"
    )
    read = site.run(f"runuser -u exec-api -- head -c 1 {saved}")
    assert read.rc == 0 and read.stdout == "{", f"the exec API reading {saved}: exit {read.rc} {read.stderr}"


def test_bob_cannot_read_alices_saved_notebook_or_history(site, exec_api_run):
    tried = {}
    for path in (f"/home/{USER}/notebooks/hub-check.ipynb", f"/home/{USER}/.ipython/profile_default/history.sqlite"):
        out = site.run(f"runuser -u bob -- cat {path}")
        tried[path] = (out.rc, out.stderr.strip()[-120:])
    read = {p: t for p, t in tried.items() if t[0] == 0 or "Permission denied" not in t[1]}
    assert not read, f"bob reading alice's files: {read}"


def test_exec_api_cannot_list_alices_home(site):
    out = site.run(f"runuser -u exec-api -- ls /home/{USER}")
    assert out.rc != 0 and "Permission denied" in out.stderr, f"the exec API listing /home/{USER}: {out.stdout!r}"


def test_an_opened_up_home_is_closed_again_by_the_converge_fix(site):
    """bob's home as useradd made it before (0755, no ACLs), then what the converge runs for every
    existing account (roles/platform_accounts/tasks/service.yml)."""
    site.check_output("setfacl -b /home/bob /home/bob/notebooks && chmod 0755 /home/bob /home/bob/notebooks")
    out = site.check_output("/usr/local/sbin/platform-account ensure-all")
    reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    bobs = next((r for r in reports if r.get("name") == "bob"), {})
    modes = {p: oct(site.file(p).mode) for p in ("/home/bob", "/home/bob/notebooks")}
    assert bobs.get("changed"), f"the fix did not name what it changed for bob: {reports}"
    assert modes == {"/home/bob": "0o710", "/home/bob/notebooks": "0o750"}, f"after the fix: {modes}"


def test_nothing_in_the_hubs_installation_is_world_writable(site, setting):
    """And uv's lock files are root's alone."""
    home = setting("home")
    out = site.check_output(
        f"find {home} -xdev \\( -type f -name .lock ! -perm 0600 \\) -o \\( -perm -0002 ! -type l \\) -print"
    )
    assert not out.strip(), f"in {home}:\n{out[:2000]}"


def test_idle_culler_runs_as_a_hub_service(site, setting):
    timeout = setting("idle_timeout")
    out = site.run(f"pgrep -f -- '-m jupyterhub_idle_culler --timeout={timeout}'")
    pids = out.stdout.split()
    assert pids, f"no idle culler with --timeout={timeout} runs"
    units = {site.check_output(f"ps -o unit= -p {pid}").strip() for pid in pids}
    assert units == {"jupyterhub.service"}, f"the idle culler runs in {units}, not as the hub's service"


# ------------------------------------------------------------------------- 4. quick rounds
def test_ten_quick_stop_start_rounds_each_end_ready(hub, mine, setting):
    """Each start ends, ready, within the hub's own start timeout (jupyterhub_start_timeout)."""
    times = []
    for i in range(1, 11):
        t0 = time.monotonic()
        stop(hub, 60)
        start(hub, mine[0], int(setting("start_timeout")) + 10)
        times.append(time.monotonic() - t0)
        print(f"round {i}: {times[-1]:.1f} s")
    print(f"figure: stop -> start -> ready, 10 rounds: {', '.join(f'{t:.1f}' for t in times)} s")


# ------------------------------------------------------------------------- 5. the hub's restart
@pytest.fixture(scope="module")
def restarted(site, hub, hub_url, ca, mine):
    """The hub restarted with alice's server running and a kernel open in it: her unit and its main
    process before and after, and that kernel."""
    hub.start(mine[0])
    k = hub.kernel()
    unit_name = server_unit(site, USER)
    before = show(site, unit_name, "MainPID")["MainPID"]
    site.check_output("systemctl restart jupyterhub.service")

    def healthy() -> bool:
        try:
            return requests.get(f"{hub_url}/hub/health", verify=ca, timeout=5).status_code == 200
        except requests.RequestException:
            return False

    until(healthy, 90, "the hub to answer after its restart")
    after = show(site, unit_name, "ActiveState", "MainPID")
    yield {"unit": unit_name, "before": before, "after": after, "kernel": k}
    k.close()


def test_hub_restart_keeps_alices_server_process(restarted):
    after = restarted["after"]
    assert after["ActiveState"] == "active" and after["MainPID"] == restarted["before"], (
        f"{restarted['unit']}: MainPID {restarted['before']} before the restart, {after}"
    )


def test_kernel_opened_before_the_hub_restart_still_runs_code(restarted):
    printed = restarted["kernel"].run("import getpass; print('after restart: ' + getpass.getuser())")
    assert printed == f"after restart: {USER}\n", f"the kernel printed {printed!r}"


def test_alices_server_opens_a_new_kernel_after_the_hub_restart(restarted, hub):
    """The server checks the token with the restarted hub."""
    k = hub.kernel()
    try:
        printed = k.run("print(6 * 7)")
    finally:
        k.close()
    assert printed == "42\n", f"a new kernel printed {printed!r}"


def test_jupyterlab_still_loads_in_the_same_browser_session_after_the_restart(restarted, lab, hub_url):
    lab.page.goto(f"{hub_url}/user/{USER}/lab?reset")
    lab.page.wait_for_selector(".jp-LauncherCard, .jp-DirListing", timeout=120000)
    assert lab.page.url.startswith(f"{hub_url}/user/{USER}/lab"), f"the lab after the restart: {lab.page.url}"


@pytest.mark.parametrize("service", ["configurable-http-proxy.service", "jupyterhub.service"])
def test_hub_and_proxy_units_exposure(restarted, site, service):
    score = exposure(site, service)
    assert score <= SERVICE_EXPOSURE, f"{service}: exposure {score} > {SERVICE_EXPOSURE}"


def test_alices_server_unit_exposure(restarted, site):
    score = exposure(site, restarted["unit"])
    assert score <= USER_CODE_EXPOSURE, f"{restarted['unit']}: exposure {score} > {USER_CODE_EXPOSURE}"


# ------------------------------------------------------------------------- 6. last: logging out
def test_logging_out_of_the_hub_ends_the_providers_session_too(lab, hub_url):
    page = lab.page
    page.goto(f"{hub_url}/hub/logout")
    # The provider asks whether to sign out (RP-initiated logout); a person says yes.
    page.locator("button[autofocus], button[type=submit], input[type=submit]").first.click()
    page.wait_for_load_state()
    status = page.goto(f"{hub_url}/hub/api/user").status
    assert status in (401, 403), f"after logging out /hub/api/user is HTTP {status}"
    page.goto(f"{hub_url}/hub/oauth_login")
    asked = page.locator("#username").count() == 1
    assert asked, f"logging in again does not ask for a password: the provider's session lives on ({page.url})"
