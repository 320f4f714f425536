"""The backup role on the controller (no host): what the wiring gives each host to keep, the
settings read back by bash exactly as given, the command's syntax, the units, and bad input
refused naming the variable without showing a secret. molecule/tests/backup/ runs it for real."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml
from conftest import BIN, ROOT, WIRING, run

ROLE = ROOT / "roles/backup"
PASSWORD = "correct-horse-battery-staple-7"
NASTY = ["/srv/data with space", "/srv/it's", "/srv/$HOME`x`"]


def render(local_inventory, tmp_path, **extra):
    """Render the role's templates for local1 with the wiring, as a run would; the data as JSON."""
    out = tmp_path / "out"
    out.mkdir()
    made = [("backup.conf.j2", "backup.conf", "run"), ("platform-backup.j2", "platform-backup", "run"),
            ("platform-backup.service.j2", "platform-backup.service", "run"),
            ("platform-backup.timer.j2", "platform-backup.timer", "run"),
            ("platform-backup.service.j2", "platform-backup-check.service", "check")]  # fmt: skip
    tasks = [{"ansible.builtin.template": {"src": f"{ROLE}/templates/{src}", "dest": f"{out}/{dest}", "mode": "0600"},
              "vars": {"__backup_unit_kind": kind}} for src, dest, kind in made]  # fmt: skip
    data = "{{ {'paths': backup_paths, 'databases': backup_databases} | to_json }}"
    tasks.append({"ansible.builtin.copy": {"dest": f"{out}/data.json", "mode": "0600", "content": data}})
    play = tmp_path / "render.yml"
    play.write_text(yaml.safe_dump([{"hosts": "local1", "gather_facts": False,
                                     "vars_files": [f"{ROLE}/defaults/main.yml", *WIRING, f"{ROLE}/vars/main.yml"],
                                     "tasks": tasks}]))  # fmt: skip
    result = run([str(BIN / "ansible-playbook"), "-i", str(local_inventory), str(play), "-e", json.dumps(extra)])
    assert result.returncode == 0, result.stdout[-3000:]
    return out, json.loads((out / "data.json").read_text())


def test_the_wiring_keeps_homes_state_and_every_database(local_inventory, tmp_path):
    _, data = render(local_inventory, tmp_path, platform_backup_repository="/srv/repo")
    assert data["paths"] == ["/home", "/var/lib/exec-api", "/var/lib/jupyterhub", "/var/lib/superset"]
    # The services' databases and the analytics database users write to (roles/analytics).
    assert sorted(data["databases"]) == ["analytics", "exec_api", "jupyterhub", "keycloak", "superset"]


def test_bash_reads_the_settings_back_exactly(local_inventory, tmp_path):
    out, _ = render(local_inventory, tmp_path, backup_repository="sftp:b@h:/r 'x'", backup_paths=NASTY,
                    backup_databases=["exec_api"])  # fmt: skip
    shown = '"$RESTIC_REPOSITORY" "${BACKUP_PATHS[@]}" "${BACKUP_DATABASES[@]}"'
    script = f". {out / 'backup.conf'}; printf '%s\\n' {shown}"
    got = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    assert got == ["sftp:b@h:/r 'x'", *NASTY, "exec_api"]


def test_the_command_is_valid_bash(local_inventory, tmp_path):
    out, _ = render(local_inventory, tmp_path, platform_backup_repository="/srv/repo")
    check = subprocess.run(["bash", "-n", str(out / "platform-backup")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", ["platform-backup.service", "platform-backup-check.service", "platform-backup.timer"])
def test_the_units_verify(local_inventory, tmp_path, unit):
    out, _ = render(local_inventory, tmp_path, platform_backup_repository="/srv/repo")
    script = tmp_path / "usr/local/sbin/platform-backup"
    units = tmp_path / "units"
    units.mkdir()
    text = (out / unit).read_text().replace("/usr/local/sbin/platform-backup", str(script))
    script.parent.mkdir(parents=True)
    shutil.copy(out / "platform-backup", script)
    script.chmod(0o755)
    (units / unit).write_text(text)
    if unit.endswith(".timer"):
        service = (out / "platform-backup.service").read_text()
        (units / "platform-backup.service").write_text(service.replace("/usr/local/sbin/platform-backup", str(script)))
    got = subprocess.run(["systemd-analyze", "verify", str(units / unit)], capture_output=True, text=True)
    mine = [ln for ln in (got.stdout + got.stderr).splitlines() if str(units) in ln or unit in ln]
    assert got.returncode == 0 and not mine, got.stdout + got.stderr
    if "service" in unit:
        assert (
            "ReadWritePaths=/var/lib/platform-backup /var/backups/platform-backup /var/cache/platform-backup -/srv/repo"
            in text
        )


def assert_play(tmp_path, **role_vars):
    play = tmp_path / "assert.yml"
    task = {"ansible.builtin.include_role": {"name": str(ROLE), "tasks_from": "assert"}, "vars": role_vars}
    play.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [task]}]))
    return run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(play)])


@pytest.mark.parametrize(
    ("role_vars", "named"),
    [
        ({"backup_repository_password": PASSWORD, "backup_paths": ["/home"]}, "backup_repository (a restic repository"),
        ({"backup_repository": "/srv/r", "backup_repository_password": "weakMARK7", "backup_paths": ["/home"]},
         "backup_repository_password (16+ characters"),
        ({"backup_repository": "/srv/r", "backup_repository_password": PASSWORD, "backup_paths": ["home"]},
         "backup_paths"),
        ({"backup_repository": "/srv/r", "backup_repository_password": PASSWORD, "backup_paths": ["/home"],
          "backup_keep_daily": 0}, "backup_keep_daily 0"),
    ],
    ids=["no-repository", "weak-password", "relative-path", "keeps-nothing"],
)  # fmt: skip
def test_bad_input_is_refused_naming_the_variable(tmp_path, role_vars, named):
    out = assert_play(tmp_path, **role_vars)
    assert out.returncode != 0 and named in out.stdout, out.stdout[-2000:]
    assert "weakMARK7" not in out.stdout and PASSWORD not in out.stdout


def test_good_input_passes(tmp_path):
    out = assert_play(tmp_path, backup_repository="/srv/r", backup_repository_password=PASSWORD, backup_paths=["/home"])
    assert out.returncode == 0, out.stdout[-2000:]


def test_a_restore_replays_whole_statements_about_missing_roles_only():
    """roles/backup/files/restore-roles.py: statements of the globals dump split whole, so text a
    user set as a default of their own role (any text, newlines and quotes included) stays in
    that user's statement."""
    import runpy

    script = runpy.run_path(str(ROOT / "roles/backup/files/restore-roles.py"))
    dump = """--
-- Roles
--
CREATE ROLE alice;
ALTER ROLE alice WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:a==$b=:c=';
CREATE ROLE "analytics.users";
ALTER ROLE alice SET search_path TO '"a
CREATE ROLE x''; GRANT pg_execute_server_program TO alice; --
b"';
GRANT "analytics.users" TO alice GRANTED BY "analytics.admin";
GRANT alice TO "analytics.admin" WITH INHERIT TRUE GRANTED BY "analytics.admin";
"""
    found = [(script["about"](s), s) for s in script["statements"](dump)]
    assert [names for names, _ in found] == [
        ["alice"], ["alice"], ["analytics.users"], ["alice"],
        ["analytics.users", "alice"], ["alice", "analytics.admin"],
    ]  # fmt: skip
    assert "GRANT pg_execute_server_program" in found[3][1] and found[3][1].endswith("b\"';")
