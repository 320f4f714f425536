"""Every Python environment the roles build (roles/python_env): installed from its lock with
bytecode compiled, root's, nothing writable by others, uv's lock files root's alone.

Users cannot write __pycache__ in these root-owned environments, so a module without compiled
bytecode is compiled from source again at every server start, kernel and run.
"""

from __future__ import annotations

import json

import pytest
from hostlib import ROOT, playbook_runner, until

pytestmark = pytest.mark.platform

# The environments each group's role builds, at the roles' default homes.
ENVIRONMENTS = {
    "exec_api": ["/opt/exec-api/venv"],
    "jupyterhub": ["/opt/jupyterhub/venv", "/opt/jupyterhub/user-venv"],
    "superset": ["/opt/superset/venv"],
}
CASES = [(group, path) for group, paths in ENVIRONMENTS.items() for path in paths]


def _uncompiled(host, venv: str) -> tuple[int, list[str]]:
    """How many modules the environment has, and those without bytecode for this Python."""
    script = r"""
import importlib.util, pathlib, sys
site = pathlib.Path(sys.argv[1])
mods = [p for p in site.rglob("*.py") if "__pycache__" not in p.parts]
missing = [str(p) for p in mods if not pathlib.Path(importlib.util.cache_from_source(str(p))).exists()]
print(len(mods)); print("\n".join(missing))
"""
    site = host.check_output(f"{venv}/bin/python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'")
    out = host.check_output(f"{venv}/bin/python -c {_quote(script)} {site}").splitlines()
    return int(out[0]), [line for line in out[1:] if line]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


@pytest.mark.parametrize(("group", "venv"), CASES, ids=[p for _, p in CASES])
def test_environment_has_bytecode_for_its_modules(group_hosts, group, venv):
    for host in group_hosts(group):
        total, missing = _uncompiled(host, venv)
        # uv compiles everything it can; a few files are not Python 3 (templates, test data).
        assert total > 100 and len(missing) <= total // 100, (
            f"{host.backend.hostname}:{venv}: {len(missing)} of {total} modules without bytecode, e.g. {missing[:5]}"
        )


@pytest.mark.parametrize(("group", "venv"), CASES, ids=[p for _, p in CASES])
def test_environment_records_the_lock_it_was_installed_from(group_hosts, group, venv):
    for host in group_hosts(group):
        record = host.file(f"{venv}/installed-from.txt")
        assert record.exists and record.user == "root", f"{host.backend.hostname}:{venv}: no root-owned install record"


@pytest.mark.parametrize(("group", "venv"), CASES, ids=[p for _, p in CASES])
def test_nothing_in_the_environment_is_writable_by_others(group_hosts, group, venv):
    for host in group_hosts(group):
        loose = host.check_output(
            f"find {venv} {venv}.dist /opt/platform-uv -xdev "
            "\\( \\( -type f -name .lock ! -perm 0600 \\) -o \\( -perm -0002 ! -type l \\) \\) -print"
        )
        assert not loose, f"{host.backend.hostname}: writable by others or an open lock file:\n{loose}"


# The interpreter each environment runs on, by the host's Debian release (README.md, "Debian 13"):
# Debian's own python3, except Superset's on Debian 13 (Debian 12's python3.11).
PYTHON = {"12": {"exec_api": "3.11", "jupyterhub": "3.11", "superset": "3.11"},
          "13": {"exec_api": "3.13", "jupyterhub": "3.13", "superset": "3.11"}}  # fmt: skip


@pytest.mark.parametrize(("group", "venv"), CASES, ids=[p for _, p in CASES])
def test_environment_runs_on_the_python_of_its_release(group_hosts, group, venv):
    for host in group_hosts(group):
        release = host.check_output("cut -d. -f1 /etc/debian_version")
        version, base = host.check_output(
            f"{venv}/bin/python -c 'import sys; print(\"%d.%d\" % sys.version_info[:2], sys.base_prefix)'"
        ).split()
        assert (version, base) == (PYTHON[release][group], "/usr"), (
            f"{host.backend.hostname} (Debian {release}):{venv} runs on Python {version} from {base}"
        )


# On Debian 13, what the superset role may take from Debian 12: its python3.11 and nothing else.
BOOKWORM_ONLY = """
import apt
for pkg in apt.Cache():
    if pkg.installed:
        names = {o.codename for o in pkg.installed.origins if o.archive != "now"}
        if names and names <= {"bookworm", "bookworm-security"}:
            print(pkg.name)
"""


# An offline host's apt knows only the bundle, whose packages have no Debian origin there: the
# bundle's description lists its Debian 12 packages (tools/bundle.py, from apt's plan).
BUNDLE_JSON = "/var/lib/platform-offline/bundle.json"


def _from_bookworm(host, offline: bool) -> set[str]:
    if not offline:
        return set(host.check_output(f"python3 -c {_quote(BOOKWORM_ONLY)}").split())
    listed = set(json.loads(host.file(BUNDLE_JSON).content_string).get("from_bookworm", []))
    installed = set(host.check_output("dpkg-query -W -f '${Package}=${Version}\\n'").split())
    return {p.split("=")[0] for p in installed & listed}


def test_nothing_but_supersets_python_comes_from_another_debian_release(group_hosts):
    for host in group_hosts("superset"):
        offline = host.file("/etc/apt/apt.conf.d/50platform-offline").exists
        foreign = _from_bookworm(host, offline)
        if host.check_output("cut -d. -f1 /etc/debian_version") == "12":
            assert not host.file("/etc/apt/preferences.d/superset-python-bookworm").exists
            continue
        allowed = {"python3.11", "python3.11-minimal", "python3.11-dev", "libpython3.11", "libpython3.11-stdlib",
                   "libpython3.11-minimal", "libpython3.11-dev"}  # fmt: skip
        assert "python3.11" in foreign and foreign <= allowed, (
            f"{host.backend.hostname}: installed from Debian 12 only: {sorted(foreign)}"
        )
        # Anything else of Debian 12's is pinned out (or, offline, not in the bundle): apt would not
        # install it even if asked (python3.11-venv is in bookworm only, and not one of the
        # packages the pin lets in).
        policy = host.check_output("apt-cache policy python3.11-venv")
        assert "Candidate: (none)" in policy and (offline or "bookworm" in policy), policy


def _major_minor(host, python: str) -> str:
    return host.check_output(f"{python} -c {_quote('import sys; print(*sys.version_info[:2], sep=chr(46))')}")


HEALTH = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=5)"


# How an environment is left by an in-place upgrade of Debian 12 to 13, made here on a Debian 13
# host with Debian 12's python3.11 (there for Superset): one python3.11 made, for python3 (uv's,
# the exec API's, the hub's), and one whose bin/python runs another Python than it was made by
# and is for (Superset's, made by /usr/bin/python3, on 12 its 3.11, and on 13 for python3.11).
LEFT_BY_AN_UPGRADE = {
    "made by 3.11": "{uv} venv --quiet --clear --python /usr/bin/python3.11 {venv}",
    "bin/python runs 3.11": "{uv} venv --quiet --clear --python /usr/bin/python3 {venv}"
    " && ln -sfn /usr/bin/python3.11 {venv}/bin/python",
}


@pytest.mark.parametrize("left", LEFT_BY_AN_UPGRADE)
def test_an_environment_another_python_made_or_runs_is_made_anew(group_hosts, inventory_path, left):
    """After Debian 12 is upgraded to 13 in place, an environment's packages are another Python's
    (roles/python_env): the exec API's environment left so, its playbook makes it anew on its
    interpreter, python3, and the service answers from it."""
    venv, system = "/opt/exec-api/venv", "/usr/bin/python3"
    hosts = [h for h in group_hosts("exec_api")
             if h.file("/usr/bin/python3.11").exists and _major_minor(h, system) != "3.11"]  # fmt: skip
    if not hosts:
        pytest.skip("no exec API host has a second Python version (Debian 13 with Superset's python3.11)")
    for host in hosts:
        host.check_output(LEFT_BY_AN_UPGRADE[left].format(uv="/opt/platform-uv/bin/uv", venv=venv))
        assert _major_minor(host, f"{venv}/bin/python") == "3.11"
    out = playbook_runner(inventory_path, ROOT / "playbooks/exec_api.yml")()
    assert out.rc == 0, out.output[-3000:]
    for host in hosts:
        name = host.backend.get_hostname()
        runs = _major_minor(host, f"{venv}/bin/python")
        assert runs == _major_minor(host, system), f"{name}: {venv} still runs on Python {runs}"
        made = host.check_output(f"grep -E '^version(_info)? *=' {venv}/pyvenv.cfg")
        assert f"= {runs}." in made, f"{name}: {venv} says {made}"
        assert host.file(f"{venv}/installed-from.txt").exists, f"{name}: {venv} was not installed again"
        # restarted by the playbook's handler
        until(lambda h=host: h.run(f"{system} -c {_quote(HEALTH)}").rc == 0, 30,
              f"{name}: the exec API to answer from its new environment")  # fmt: skip
