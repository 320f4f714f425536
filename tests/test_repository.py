"""The repository's shape and the promises that keep it consistent."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import BIN, ROOT, run

ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if p.is_dir())
SERVICES = ["postgresql", "keycloak", "exec_api", "jupyterhub", "superset", "nginx"]


def test_top_level_layout():
    for path in ["site.yml", "playbooks", "roles", "inventories", "group_vars", "files/exec_api", "molecule",
                 "ansible.cfg", "requirements.yml", "README.md", ".ci/run", ".ansible-lint", ".yamllint"]:  # fmt: skip
        assert (ROOT / path).exists(), path


def test_site_imports_one_playbook_per_service_in_dependency_order():
    site = yaml.safe_load((ROOT / "site.yml").read_text())
    imported = [p["ansible.builtin.import_playbook"] for p in site]
    # Then the backups of whatever the services keep, last.
    assert imported[-1] == "playbooks/backup.yml"
    # The analytics database (on the database server, with users' access from the hub's hosts)
    # before JupyterHub, whose logins keep users' roles there.
    assert imported.index("playbooks/analytics.yml") < imported.index("playbooks/jupyterhub.yml")
    assert sorted(p for p in imported[:-1] if p != "playbooks/analytics.yml") == sorted(
        f"playbooks/{s}.yml" for s in SERVICES
    )
    # The database first; nginx (and the CA every host trusts) before the services behind it.
    assert imported[:2] == ["playbooks/postgresql.yml", "playbooks/nginx.yml"]
    for svc in SERVICES:
        plays = yaml.safe_load((ROOT / "playbooks" / f"{svc}.yml").read_text())
        targets = [p["hosts"] for p in plays if "hosts" in p]
        assert svc in targets, f"playbooks/{svc}.yml must target the `{svc}` group"


def test_requirements_pin_the_collections_the_tool_environment_carries():
    reqs = yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    out = run([str(BIN / "ansible-galaxy"), "collection", "list", "--format", "json"])
    assert out.returncode == 0, out.stderr
    installed: dict[str, str] = {}
    for path_collections in json.loads(out.stdout).values():
        for name, meta in path_collections.items():
            installed.setdefault(name, meta["version"])
    for req in reqs:
        assert re.fullmatch(r"\d+\.\d+\.\d+", req["version"]), f"{req['name']} is not pinned"
        assert installed.get(req["name"]) == req["version"], req["name"]
    used = set()
    for f in [*ROOT.glob("roles/**/*.yml"), *ROOT.glob("playbooks/*.yml"), *ROOT.glob("molecule/**/*.yml")]:
        used |= set(re.findall(r"^\s*-?\s*((?:community|ansible)\.[a-z_]+)\.[a-z_]+:", f.read_text(), re.M))
    used.discard("ansible.builtin")
    assert used <= {r["name"] for r in reqs}, f"collections used but not pinned: {used}"


# Roles other roles include (include_role) for one job: no service of their own, so no lifecycle
# files (assert, install, configure, service, handlers); their argument_specs check the inputs.
LIBRARY_ROLES = {"python_env"}


@pytest.mark.parametrize("role", ROLES)
def test_role_shape(role):
    base = ROOT / "roles" / role
    lifecycle = ["handlers/main.yml", "tasks/assert.yml", "tasks/install.yml", "tasks/configure.yml",
                 "tasks/service.yml"]  # fmt: skip
    for f in ["README.md", "defaults/main.yml", "meta/argument_specs.yml", "meta/main.yml", "tasks/main.yml",
              *([] if role in LIBRARY_ROLES else lifecycle)]:  # fmt: skip
        assert (base / f).is_file(), f"roles/{role}/{f}"
    for tpl in base.glob("templates/*.j2"):
        text = tpl.read_text()
        if text.startswith("#!"):  # a script: its interpreter line comes first
            text = text.split("\n", 1)[1]
        # SQL has its own comment mark: comment(decoration='-- ').
        header = "{{ ansible_managed | comment" + ("(" if tpl.name.endswith(".sql.j2") else " }}")
        assert text.startswith(header), tpl


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_match_defaults(role):
    """argument_specs' `default:` is documentation only: it must say what defaults/main.yml does."""
    base = ROOT / "roles" / role
    defaults = yaml.safe_load((base / "defaults/main.yml").read_text()) or {}
    specs = yaml.safe_load((base / "meta/argument_specs.yml").read_text())["argument_specs"]
    options = {name: spec for entry in specs.values() for name, spec in entry.get("options", {}).items()}
    assert set(options) == set(defaults), f"documented vs defaulted differ: {set(options) ^ set(defaults)}"
    for name, spec in options.items():
        assert name.startswith(role + "_"), f"{name} lacks the role prefix"
        assert spec.get("description"), f"{name} is undocumented"
        if "default" in spec:
            default = defaults[name]
            assert spec["default"] == default or str(spec["default"]) == str(default), name


@pytest.mark.parametrize("role", ROLES)
def test_role_readme_documents_every_variable(role):
    readme = (ROOT / "roles" / role / "README.md").read_text()
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults/main.yml").read_text()) or {}
    for name in defaults:
        assert f"`{name}`" in readme, f"roles/{role}/README.md does not document {name}"


def test_no_secret_has_a_default():
    # "key", but not the "key" of "keycloak_*" names.
    bad = re.compile(r"(password|secret|token|key(?!cloak))\w*:\s*[\"']?(?!\{\{)[^\s\"'#\[{][^\n]*", re.I)
    for f in [
        *ROOT.glob("roles/*/defaults/*.yml"),
        *ROOT.glob("roles/*/vars/*.yml"),
        *ROOT.glob("group_vars/**/*.yml"),
    ]:
        for line in f.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            assert not bad.search(line), f"{f.relative_to(ROOT)}: {line.strip()}"
    for f in ROOT.rglob("*"):
        if f.is_file() and ".venv" not in f.parts and ".git" not in f.parts and f.suffix in {".yml", ".j2", ".cfg"}:
            assert "changeme" not in f.read_text().lower(), f
