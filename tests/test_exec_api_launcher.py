"""The root side of the exec API's launcher refuses everything but the API's own run requests."""

from __future__ import annotations

import ast
import grp
import importlib.machinery
import importlib.util
import pwd

import pytest
import yaml
from conftest import ROOT

_path = str(ROOT / "roles/exec_api/files/exec_api_launcher.py")
_loader = importlib.machinery.SourceFileLoader("exec_api_launcher", _path)
launcher = importlib.util.module_from_spec(importlib.util.spec_from_loader("exec_api_launcher", _loader))
_loader.exec_module(launcher)

# The run sandbox the role pins (vars/main.yml), and the one the API's runner asks for.
HARDENING: dict[str, str] = yaml.safe_load((ROOT / "roles/exec_api/vars/main.yml").read_text())[
    "__exec_api_run_hardening"
]
_runners = ast.parse((ROOT / "files/exec_api/exec_api/services/runners.py").read_text())
RUN_HARDENING = next(
    ast.literal_eval(n.value)
    for n in _runners.body
    if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "RUN_HARDENING"
)
SANDBOX = [f"{k}={v}" for k, v in HARDENING.items()]
CFG = {
    "client_user": "exec-api",
    "users_group": "platform-users",
    "min_uid": 1000,
    "slice": "exec-api-runs.slice",
    "systemd_run": "/usr/bin/systemd-run",
    "systemctl": "/usr/bin/systemctl",
    "warm_command": ["/opt/exec-api/venv/bin/python", "-P", "-m", "exec_api.services.warm"],
    "allowed_properties": ["MemoryMax", "MemorySwapMax", "CPUQuota", "TasksMax", "RuntimeMaxSec", "KillMode",
                           "OOMPolicy", "TimeoutStopSec", "WorkingDirectory", "BindPaths", *HARDENING],
    "required_properties": ["MemoryMax", "CPUQuota", "TasksMax", "RuntimeMaxSec", "KillMode", "OOMPolicy",
                            "BindPaths", *HARDENING],
    "fixed_properties": {"KillMode": "control-group", "OOMPolicy": "continue", **HARDENING},
}  # fmt: skip
# Every required limit and the sandbox but KillMode, which the cases below vary.
LIMITS = ["MemoryMax=2G", "CPUQuota=1%", "TasksMax=1", "RuntimeMaxSec=1", "OOMPolicy=continue", "BindPaths=/home/alice",
          *SANDBOX]  # fmt: skip
ALICE = pwd.struct_passwd(("alice", "x", 1001, 1001, "", "/home/alice", "/bin/bash"))
SVC = pwd.struct_passwd(("www-data", "x", 33, 33, "", "/var/www", "/usr/sbin/nologin"))
USERS = {1001: ALICE, 33: SVC}


@pytest.fixture(autouse=True)
def fake_accounts(monkeypatch):
    def getpwuid(uid):
        return USERS[uid]

    monkeypatch.setattr(launcher.pwd, "getpwuid", getpwuid)
    monkeypatch.setattr(
        launcher.grp, "getgrnam", lambda name: grp.struct_group((name, "x", 2000, ["alice", "www-data"]))
    )


def argv(uid=1001, gid=1001, home="/home/alice", user="alice", unit="exec-api-warm-0123456789ab.service", props=None,
         command=None, extra=()):  # fmt: skip
    props = props if props is not None else [
        "MemoryMax=2G", "MemorySwapMax=0", "CPUQuota=100%", "TasksMax=256", "RuntimeMaxSec=90060",
        "KillMode=control-group", "OOMPolicy=continue", "TimeoutStopSec=5", *SANDBOX, f"BindPaths={home}",
        f"WorkingDirectory={home}",
    ]  # fmt: skip
    out = [f"--unit={unit}", "--slice=exec-api-runs.slice", f"--uid={uid}", f"--gid={gid}", "--quiet", "--collect",
           "--wait", "--pipe", "--service-type=exec", f"--setenv=HOME={home}", f"--setenv=USER={user}",
           f"--setenv=LOGNAME={user}", "--setenv=PYDEVD_DISABLE_FILE_VALIDATION=1",
           "--setenv=EXEC_API_WARM_READY=1", *extra]  # fmt: skip
    for p in props:
        out += ["-p", p]
    return [*out, "--", *(command or CFG["warm_command"])]


def argv_props():
    """The unit properties of the API's own request."""
    a = argv()
    return [a[i + 1] for i, o in enumerate(a) if o == "-p"]


def test_the_role_pins_the_sandbox_the_runner_asks_for():
    assert list(RUN_HARDENING) == SANDBOX


def test_the_apis_own_request_is_accepted():
    a = argv()
    assert launcher.check_run(a, CFG) == ["/usr/bin/systemd-run", *a]


ANALYTICS = {**CFG, "environment": {"PGSERVICE": "analytics", "PGSYSCONFDIR": "/etc/postgresql-common"}}


def test_the_configured_run_environment_is_accepted_with_its_values():
    a = argv(extra=["--setenv=PGSERVICE=analytics", "--setenv=PGSYSCONFDIR=/etc/postgresql-common"])
    assert launcher.check_run(a, ANALYTICS) == ["/usr/bin/systemd-run", *a]


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["--setenv=PGSERVICE=elsewhere"], "PGSERVICE must be analytics"),
        (["--setenv=PGSYSCONFDIR=/home/alice"], "PGSYSCONFDIR must be /etc/postgresql-common"),
        (["--setenv=PGPASSFILE=/etc/shadow"], "not allowed"),
    ],
)
def test_another_value_or_name_of_the_run_environment_is_refused(extra, reason):
    with pytest.raises(launcher.Refused, match=reason):
        launcher.check_run(argv(extra=extra), ANALYTICS)


@pytest.mark.parametrize(
    ("request_argv", "reason"),
    [
        (argv(uid=0, gid=0, home="/root", user="root"), "not a user of this host"),
        (argv(uid=33, gid=33, home="/var/www", user="www-data"), "not a platform user"),
        (argv(command=["/bin/sh", "-c", "id"]), "is not the exec API's warm runner command"),
        (argv(unit="ssh.service"), "not one of the exec API's warm runner units"),
        (argv(extra=["-p", "User=root"]), "not allowed"),
        (argv(extra=["--property=User=root"]), "not allowed"),
        (argv(extra=["--setenv=LD_PRELOAD=/tmp/x.so"]), "not allowed"),
        (argv(extra=["--setenv=EXEC_API_WARM_READY=-1"]), "from 0 to 99"),
        (argv(extra=["--setenv=EXEC_API_WARM_READY=1\nX=2"]), "from 0 to 99"),
        (argv(extra=["--setenv=EXEC_API_KERNEL=python3"]), "not allowed"),
        (argv(unit="exec-api-run-42-a1b2c3.service"), "warm runner units"),
        (argv(props=[p for p in argv_props() if not p.startswith("OOMPolicy=")]), "missing: OOMPolicy"),
        (argv(props=[p for p in argv_props() if not p.startswith("RuntimeMaxSec=")]), "missing: RuntimeMaxSec"),
        (argv(command=["/opt/exec-api/venv/bin/python", "-m", "exec_api.services.warm"]), "warm runner command"),
        (argv(props=[p.replace("OOMPolicy=continue", "OOMPolicy=kill") for p in argv_props()]), "OOMPolicy must be"),
        (argv(gid=0), "primary group"),
        (argv(home="/root"), "HOME, USER and LOGNAME"),
        (argv(props=["MemoryMax=2G"]), "required unit properties missing"),
        (argv(props=[*LIMITS, "KillMode=none"]), "KillMode must be control-group"),
        (argv(props=[*LIMITS, "KillMode=control-group", "WorkingDirectory=/etc"]), "inside the user's home"),
        (argv()[: argv().index("--")], "no command after --"),
        (argv(props=[p for p in argv_props() if not p.startswith("ProtectHome=")]), "missing: ProtectHome"),
        (argv(props=[*LIMITS, "KillMode=control-group", "ProtectSystem=full"]), "given twice"),
        (
            argv(props=[p.replace("ProtectSystem=strict", "ProtectSystem=full") for p in argv_props()]),
            "ProtectSystem must be strict",
        ),
        (
            argv(props=[p.replace("=AF_UNIX", "=AF_PACKET AF_UNIX") for p in argv_props()]),
            "RestrictAddressFamilies must be",
        ),
        (argv(props=[*argv_props(), "BindPaths=/etc"]), "given twice"),
        (
            argv(props=[p.replace("BindPaths=/home/alice", "BindPaths=/") for p in argv_props()]),
            "BindPaths must be the user's home",
        ),
        (
            argv(props=[p.replace("BindPaths=/home/alice", "BindPaths=/home/alice /home/bob") for p in argv_props()]),
            "BindPaths must be the user's home",
        ),
        (
            argv(
                props=[p.replace("CapabilityBoundingSet=", "CapabilityBoundingSet=CAP_SYS_ADMIN") for p in argv_props()]
            ),
            "CapabilityBoundingSet must be",
        ),
    ],
)
def test_anything_else_is_refused(request_argv, reason):
    with pytest.raises(launcher.Refused, match=reason):
        launcher.check_run(request_argv, CFG)


def test_stop_only_the_apis_units():
    stop = ["stop", "--no-block", "exec-api-warm-0123456789ab.service"]
    assert launcher.check_stop(stop, CFG) == ["/usr/bin/systemctl", *stop]
    for bad in (["stop", "--no-block", "sshd.service"], ["kill", "exec-api-warm-0123456789ab.service"],
                ["stop", "exec-api-warm-0123456789ab.service"], ["stop", "--no-block", "exec-api-warm-*.service"],
                ["stop", "--no-block", "exec-api-warm-0123.service"], ["stop", "--no-block", "*.service"],
                ["stop", "--no-block", "exec-api-warm-0123456789ab.socket"]):  # fmt: skip
        with pytest.raises(launcher.Refused):
            launcher.check_stop(bad, CFG)
