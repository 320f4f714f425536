"""Offline installs (tools/bundle.py, platform_offline_bundle): a host that reaches no package
registry was converged from the bundle alone. The scenario's harness refuses whatever the host
sends past its bridge (tools/testhost.py --offline); these tests show that it did, and that apt and
every Python environment took what they installed from the bundle."""

from __future__ import annotations

import json
import re
import shlex
import socket

import pytest

BUNDLE_DIR = "/var/lib/platform-offline"
REGISTRIES = ["deb.debian.org", "pypi.org", "files.pythonhosted.org"]
ENVIRONMENTS = ["/opt/exec-api/venv", "/opt/jupyterhub/venv", "/opt/jupyterhub/user-venv", "/opt/superset/venv"]
PACKAGES = ["nginx", "postgresql-{pg}", "redis-server", "restic", "node-configurable-http-proxy", "{python_dev}"]
# What differs by release (tools/bundle.py's RELEASES): PostgreSQL, and Superset's interpreter
# (Debian 12's python3.11 on Debian 13, from the same bundle).
RELEASE_NAMES = {"bookworm": {"pg": "15", "python_dev": "python3-dev"},
                 "trixie": {"pg": "17", "python_dev": "python3.11-dev"}}  # fmt: skip


@pytest.fixture(scope="module")
def offline_hosts(inventory, hostvars, inventory_path):
    import testinfra

    names = [n for n in sorted(hostvars) if hostvars[n].get("platform_offline_bundle")]
    if not names:
        pytest.skip("no host of this scenario installs offline")
    return [testinfra.get_host(f"ansible://{n}", ansible_inventory=str(inventory_path)) for n in names]


def _address(name: str) -> str:
    return socket.getaddrinfo(name, 443, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]


@pytest.mark.parametrize("registry", REGISTRIES)
def test_the_host_reaches_no_registry_that_this_machine_reaches(offline_hosts, registry):
    addr = _address(registry)  # this machine resolves it and connects to it ...
    socket.create_connection((addr, 443), timeout=10).close()
    probe = f"import socket; socket.create_connection(({addr!r}, 443), timeout=10)"
    for host in offline_hosts:  # ... the offline host neither resolves it nor connects to it
        name = host.backend.get_hostname()
        assert host.run(f"getent hosts {registry}").rc != 0, f"{name} resolves {registry}"
        out = host.run(f"python3 -c {shlex.quote(probe)}")
        assert out.rc != 0, f"{name} connected to {registry} ({addr}:443)"


def test_apt_reads_the_bundle_and_nothing_else(offline_hosts):
    for host in offline_hosts:
        policy = host.check_output("apt-cache policy")
        sources = set(re.findall(r"^\s+-?\d+ (\S+) .*\bPackages$", policy, re.M))
        assert sources == {f"file:{BUNDLE_DIR}/apt"}, f"{host.backend.get_hostname()}'s apt sources: {sources}"


@pytest.mark.parametrize("package", PACKAGES)
def test_the_installed_package_is_the_bundles(offline_hosts, package):
    for host in offline_hosts:
        name = host.backend.get_hostname()
        package = package.format(**RELEASE_NAMES[host.system_info.codename])
        version = host.check_output(f"dpkg-query -W -f '${{Version}}' {package}")
        debs = host.check_output(f"ls {BUNDLE_DIR}/apt").split()
        wanted = f"{package}_{version.replace(':', '%3a')}_"
        assert any(d.startswith(wanted) for d in debs), f"{name}: {package} {version} is not in the bundle"


@pytest.mark.parametrize("venv", ENVIRONMENTS)
def test_the_environment_was_installed_from_the_bundles_wheels(offline_hosts, venv):
    for host in offline_hosts:
        record = host.file(f"{venv}/installed-from.txt")
        assert record.exists, f"{host.backend.get_hostname()}: {venv} has no install record"
        assert record.content_string.split()[-1] == "offline", (
            f"{host.backend.get_hostname()}: {venv} was installed {record.content_string.split()[-1]}"
        )


def test_no_local_user_can_change_what_apt_and_uv_install(offline_hosts):
    """Every platform user has a shell here: a package or wheel they could write, or a directory
    where they could add one, would be installed as root at the next run."""
    for host in offline_hosts:
        name = host.backend.get_hostname()
        loose = host.check_output(f"find {BUNDLE_DIR} -xdev \\( ! -user root -o ! -group root -o -perm /022 \\) -print")
        assert loose == "", f"{name}: writable by others than root, or not root's, under {BUNDLE_DIR}: {loose}"


@pytest.mark.parametrize("path", ["apt/platform.deb", "apt/Packages", "wheels/uv-0-py3-none-any.whl",
                                  "sources.d/more.sources", "bundle.json"])  # fmt: skip
def test_a_local_user_adds_or_changes_nothing_apt_or_uv_would_install(offline_hosts, path):
    """As a local user with a shell (nobody: no group of the platform's), in the bundle's
    directories: each write is refused."""
    for host in offline_hosts:
        target = f"{BUNDLE_DIR}/{path}"
        before = host.run(f"sha256sum {target}").stdout
        out = host.run(f"runuser -u nobody -- sh -c {shlex.quote(f'echo planted >> {target}')}")
        assert out.rc != 0, f"{host.backend.get_hostname()}: nobody wrote {target}"
        assert host.run(f"sha256sum {target}").stdout == before, f"{host.backend.get_hostname()}: {target} changed"


def test_the_host_keeps_the_bundle_it_unpacked_and_not_its_archives(offline_hosts):
    """The archives are copied and unpacked only when the bundle's description differs from the
    one the host keeps (roles/common/tasks/offline.yml), and are not kept after."""
    for host in offline_hosts:
        name = host.backend.get_hostname()
        kept = json.loads(host.file(f"{BUNDLE_DIR}/bundle.json").content_string)
        assert kept["release"] == host.system_info.codename and kept["inputs"], f"{name} keeps {kept}"
        assert host.run(f"ls {BUNDLE_DIR}/*.tar").rc != 0, f"{name} keeps the bundle's archives"
