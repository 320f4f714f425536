"""The offline bundle's Debian package list (tools/bundle.py) against the roles' apt tasks: a
package a role installs by name and the bundle lacks would stop an offline converge halfway. The
names the roles template by release are the bundle's for each release; the default (Debian 12)
and trixie (Debian 13) scenarios converge from their bundles with no route to any registry
(molecule/tests/offline/). And the controller's part of an offline install: the exec API's wheel
builds with no network at all."""

from __future__ import annotations

import os
import sys

import yaml
from conftest import BIN, ROOT, run

sys.path.insert(0, str(ROOT / "tools"))
import bundle


def _tasks(node):
    if isinstance(node, list):
        for item in node:
            yield from _tasks(item)
    elif isinstance(node, dict):
        yield node
        for key in ("block", "rescue", "always"):
            yield from _tasks(node.get(key))


def apt_names() -> dict[str, set[str]]:
    """Each role's package names written literally in its apt tasks, and common's constants."""
    names: dict[str, set[str]] = {}
    for path in sorted(ROOT.glob("roles/*/tasks/*.yml")):
        for task in _tasks(yaml.safe_load(path.read_text())):
            apt = task.get("ansible.builtin.apt")
            if not isinstance(apt, dict) or "name" not in apt:
                continue
            listed = apt["name"] if isinstance(apt["name"], list) else [apt["name"]]
            role = path.parts[-3]
            names.setdefault(role, set()).update(n for n in listed if "{{" not in n)
    common = yaml.safe_load((ROOT / "roles/common/vars/main.yml").read_text())["__common_packages"]
    names.setdefault("common", set()).update(common)
    return names


def test_every_package_a_role_names_is_in_the_bundle():
    bundled = {p for ps in bundle.PACKAGES.values() for p in ps}
    missing = {role: sorted(n - bundled) for role, n in apt_names().items() if n - bundled}
    assert not missing, f"add to PACKAGES in tools/bundle.py: {missing}"


def _vars(role: str) -> dict:
    return yaml.safe_load((ROOT / f"roles/{role}/vars/main.yml").read_text())


def test_what_the_roles_install_by_release_is_in_that_releases_bundle():
    """PostgreSQL's version and Keycloak's OpenJDK by Debian release (the roles' vars), and
    Superset's interpreter (Debian's python3 on 12, Debian 12's python3.11 on 13)."""
    postgresql = _vars("postgresql")["__postgresql_release_versions"]
    java = _vars("keycloak")["__keycloak_java_packages"]
    for release, spec in bundle.RELEASES.items():
        major = spec["debian"]
        superset = ["python3-dev"] if major == "12" else ["python3.11", "python3.11-dev"]
        wanted = {f"postgresql-{postgresql[major]}", f"postgresql-client-{postgresql[major]}", java[major], *superset}
        assert wanted <= set(bundle.packages(release)), f"{release}: {sorted(wanted - set(bundle.packages(release)))}"
    majors = {spec["debian"] for spec in bundle.RELEASES.values()}
    assert majors == set(postgresql) == set(java), "a release the roles know is not bundled, or the reverse"


def _stanzas(preferences: str) -> list[dict[str, str]]:
    """apt preferences as their stanzas' fields, comments and blank lines aside."""
    blocks = [b for b in preferences.split("\n\n") if b.strip()]
    lines = [[ln for ln in b.splitlines() if ln.strip() and not ln.startswith("#")] for b in blocks]
    return [dict(ln.split(": ", 1) for ln in block) for block in lines if block]


def test_debian_13s_bundle_takes_from_debian_12_what_the_superset_role_pins_in():
    """The bundle resolves Debian 13's packages under the preferences the superset role writes on
    its hosts (rendered here from the role's task), so it holds what an online host installs."""
    import jinja2

    names, preferences = bundle.bookworm_pin()
    packages = _vars("superset")["__superset_bookworm_packages"]
    assert names == packages.split()
    tasks = yaml.safe_load((ROOT / "roles/superset/tasks/install.yml").read_text())
    pin = next(
        t for t in _tasks(tasks) if t.get("ansible.builtin.copy", {}).get("dest") == "{{ __superset_bookworm_pin }}"
    )
    role = jinja2.Template(pin["ansible.builtin.copy"]["content"]).render(__superset_bookworm_packages=packages)
    assert _stanzas(preferences) == _stanzas(role)
    assert {"Package": "*", "Pin": "release n=bookworm", "Pin-Priority": "-1"} in _stanzas(preferences)


def test_a_package_of_another_release_in_apts_plan_is_named():
    plan = (
        "Inst libffi8 (3.4.8-2 Debian:13.2/stable [amd64])\n"
        "Inst libssl3t64 (3.5.9-1~deb13u1 Debian:13.2/stable, Debian-Security:13/stable-security [amd64])\n"
        "Inst python3.11 (3.11.2-6+deb12u9 Debian:12.12/oldstable, Debian-Security:12/oldstable-security [amd64])\n"
        "Inst libexpat1 (2.5.0-1 Debian:12.12/oldstable [amd64]) []\n"
        "Conf libffi8 (3.4.8-2 Debian:13.2/stable [amd64])\n"
    )
    assert bundle.other_release(plan, "trixie") == ["libexpat1=2.5.0-1", "python3.11=3.11.2-6+deb12u9"]
    assert bundle.other_release(plan, "bookworm") == ["libffi8=3.4.8-2", "libssl3t64=3.5.9-1~deb13u1"]


def test_the_roles_found_are_the_roles_that_install_packages():
    # The parse above found something in each role the bundle lists (it would pass on nothing).
    assert set(apt_names()) >= set(bundle.PACKAGES) - {"keycloak", "superset", "postgresql"}
    assert {"nginx", "restic", "python3-apt"} <= {n for ns in apt_names().values() for n in ns}


def test_the_bundle_is_rebuilt_when_a_lock_changes(tmp_path):
    lock = tmp_path / "requirements.txt"
    lock.write_text("six==1.16.0 --hash=sha256:00\n")
    before = bundle.inputs_hash({"x": lock})
    assert bundle.inputs_hash({"x": lock}) == before
    lock.write_text("# a header naming /tmp/elsewhere\nsix==1.16.0 --hash=sha256:00\n")
    assert bundle.inputs_hash({"x": lock}) == before, "a comment rebuilt the bundle"
    lock.write_text("six==1.17.0 --hash=sha256:00\n")
    assert bundle.inputs_hash({"x": lock}) != before


def test_the_exec_api_wheel_builds_on_a_controller_with_no_network(tmp_path):
    """python_env's wheel.yml, as the exec_api role includes it, in a network namespace of its own
    (no interface but loopback) and with an empty uv cache: the build backend is the controller
    tools' hatchling, nothing is downloaded."""
    play = tmp_path / "build.yml"
    play.write_text(yaml.safe_dump([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"ansible.builtin.include_role": {"name": "python_env", "tasks_from": "wheel"},
                   "vars": {"python_env_build_src": str(ROOT / "files/exec_api"),
                            "python_env_build_name": "exec_api"}}],
    }]))  # fmt: skip
    out = run(["unshare", "--net", str(BIN / "ansible-playbook"), "-i", "localhost,", str(play),
               "-e", f"__python_env_build_root={tmp_path / 'build'}"],
              env={"UV_CACHE_DIR": str(tmp_path / "uv-cache"), "PATH": f"{BIN}:{os.environ['PATH']}",
                   "ANSIBLE_STRATEGY": "linear"})  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    built = list((tmp_path / "build/exec_api").glob("*/exec_api-*.whl"))
    assert len(built) == 1, f"no wheel built: {list((tmp_path / 'build').rglob('*'))}"
    assert (built[0].parent / "requirements.txt").is_file()
