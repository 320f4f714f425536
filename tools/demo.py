#!/usr/bin/env python3
"""The README's demo: the whole stack on one throw-away local test host.

    demo.py up     boot the host (tools/testhost.py), run site.yml against it, print what runs
    demo.py down   stop the host and remove everything `up` added

The inventory is written to .demo/hosts.yml (git-ignored), with every service group on the
one host `demo1`; generated secrets land in .demo/.secrets/. Re-running `up` boots a fresh host.

Release: Debian 12, or 13 with DEMO_RELEASE=trixie (then Superset runs on Debian 12's python3.11:
README, "Debian 13").

Identity: with KEYCLOAK_ARCHIVE=/path/to/keycloak-<version>.tar.gz the host runs Keycloak (the
archive cannot be downloaded here); without it, the test harness's OpenID provider runs beside
the stack and the stack uses it as an external provider (molecule/shared/external_idp.yml), with
its test users (passwords in .demo/.secrets/idp_user_<name>_password).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
SCENARIO = "demo"
HOST = "demo1"
DOMAIN = "platform.test"
GROUPS = ["postgresql", "keycloak", "exec_api", "jupyterhub", "superset", "nginx"]
# Units the platform's roles install; the summary lists those present on the host.
# The web services, each at https://<label>.<domain>, with a page that answers.
WEB = {
    "auth": "/.well-known/openid-configuration",
    "api": "/health",
    "hub": "/hub/health",
    "superset": "/health",
}
UNITS = ["postgresql@*-main", "keycloak", "test-oidc-provider", "exec-api", "jupyterhub", "superset", "nginx",
         "exec-api-launcher.socket", "platform-backup.timer"]  # fmt: skip
KEYCLOAK_ARCHIVE = os.environ.get("KEYCLOAK_ARCHIVE", "")
# The demo host's Debian release (tools/testhost.py's suites).
RELEASES = {"bookworm": "Debian 12", "trixie": "Debian 13"}
RELEASE = os.environ.get("DEMO_RELEASE", "bookworm")


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, **kw)


def ssh_options(identity_file: str, address: str) -> list[str]:
    """ssh's (and scp's) options and target for root on a test host."""
    return ["-i", identity_file, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", f"root@{address}"]  # fmt: skip


def up() -> dict:
    """Boot, converge and describe the demo host; its address and how long each step took."""
    if RELEASE not in RELEASES:
        sys.exit(f"DEMO_RELEASE={RELEASE}: the demo host runs {' or '.join(RELEASES)} (Debian 12 or 13)")
    t0 = time.monotonic()
    names = ",".join(f"{label}.{DOMAIN}" for label in WEB)
    spec = f"{HOST}@{RELEASE}={names}"
    hosts = json.loads(sh([sys.executable, str(ROOT / "tools/testhost.py"), "up", SCENARIO, spec],
                          stdout=subprocess.PIPE).stdout)  # fmt: skip
    host = hosts[0]
    groups = GROUPS if KEYCLOAK_ARCHIVE else [*GROUPS, "oidc_test_provider"]
    playbook = ROOT / ("site.yml" if KEYCLOAK_ARCHIVE else "molecule/shared/converge.yml")
    DEMO.mkdir(exist_ok=True)
    (DEMO / ".secrets").mkdir(mode=0o700, exist_ok=True)
    if not KEYCLOAK_ARCHIVE and not (DEMO / "group_vars").exists():
        # The harness's converge playbook is not beside site.yml: the wiring comes with the inventory.
        (DEMO / "group_vars").symlink_to(ROOT / "group_vars")
    inventory = {
        "all": {
            "hosts": {HOST: {
                "ansible_host": host["address"], "ansible_user": "root",
                "ansible_ssh_private_key_file": host["identity_file"],
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
                "ansible_host_key_checking": False,
            }},
            # Backups to a repository on the host itself (a real site names another disk or host).
            "vars": {"platform_domain": DOMAIN, "platform_backup_repository": "/srv/platform-backup-repository"},
            "children": {g: {"hosts": {HOST: None}} for g in groups},
        }
    }  # fmt: skip
    if RELEASE == "trixie":  # Superset 6.0 needs Python 3.11 or 3.12 (README, "Debian 13")
        inventory["all"]["vars"]["superset_python_from_bookworm"] = True
    if KEYCLOAK_ARCHIVE:
        inventory["all"]["vars"]["keycloak_archive_local"] = KEYCLOAK_ARCHIVE
    else:
        external = yaml.safe_load((ROOT / "molecule/shared/external_idp.yml").read_text())
        inventory["all"]["vars"] |= external["all"]["vars"]
    (DEMO / "hosts.yml").write_text("---\n" + json.dumps(inventory, indent=2) + "\n")
    booted = time.monotonic() - t0
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    sh([str(ROOT / ".venv/bin/ansible-playbook"), "-i", str(DEMO / "hosts.yml"), str(playbook)],
       cwd=ROOT, env=env)  # fmt: skip
    converged = time.monotonic() - t0 - booted
    ssh = ["ssh", *ssh_options(host["identity_file"], host["address"])]
    # The PostgreSQL unit carries the release's major version: its name from the units loaded (is-active
    # takes names only, one state each, in order).
    listed = sh([*ssh, "systemctl list-units --plain --no-legend " + shlex.quote(UNITS[0] + ".service")],
                stdout=subprocess.PIPE).stdout.split()  # fmt: skip
    units = [listed[0] if listed else UNITS[0], *UNITS[1:]]
    states = sh([*ssh, "systemctl is-active " + " ".join(map(shlex.quote, units)) + " || true"],
                stdout=subprocess.PIPE).stdout.split()  # fmt: skip
    dbs = sh([*ssh, "runuser -u postgres -- psql -Atc \"SELECT datname FROM pg_database WHERE NOT datistemplate"
                    " AND datname <> 'postgres' ORDER BY 1\" 2>/dev/null || true"],
             stdout=subprocess.PIPE).stdout.split()  # fmt: skip
    print(f"""
The demo host is up (booted in {booted:.0f} s, converged in {converged:.0f} s).

  host        {HOST} at {host["address"]} (systemd-nspawn machine, {RELEASES[RELEASE]})
  log in      {" ".join(ssh)}
  inventory   {DEMO / "hosts.yml"}   (secrets in {DEMO / ".secrets"})
  re-run      .venv/bin/ansible-playbook -i .demo/hosts.yml {playbook.relative_to(ROOT)}
  identity    {"Keycloak" if KEYCLOAK_ARCHIVE else "the test OpenID provider (users alice, bob, carol, mallory)"}
  passwords   {DEMO / ".secrets"}/idp_user_<name>_password

Services:""")
    for unit, state in zip(units, states, strict=False):
        if state != "inactive" or unit.startswith("postgresql"):
            print(f"  {unit:20} {state}")
    ca = DEMO / ".secrets/platform-ca.crt"
    print("\nWeb (through nginx, TLS from the install's private CA):")
    for label, path in WEB.items():
        print(
            f"  https://{label}.{DOMAIN}/   e.g. curl --cacert {ca} --resolve {label}.{DOMAIN}:443:{host['address']} "
            f"https://{label}.{DOMAIN}{path}"
        )
    print(
        f"  CA certificate for browsers: {ca}; add '{host['address']} {' '.join(f'{w}.{DOMAIN}' for w in WEB)}'"
        " to /etc/hosts to browse"
    )
    print(f"\n  PostgreSQL listens on 127.0.0.1:5432 and [::1]:5432 of the host; databases: {', '.join(dbs)}")
    print("  (each owned by its own login role; passwords in .demo/.secrets/postgresql_<db>_password)")
    print("\nDestroy it with: make demo-destroy")
    return {"host": host, "playbook": str(playbook), "booted_s": booted, "converged_s": converged}


def down() -> None:
    sh([sys.executable, str(ROOT / "tools/testhost.py"), "down", SCENARIO])


if __name__ == "__main__":
    try:
        {"up": up, "down": down}.get(sys.argv[1] if len(sys.argv) > 1 else "", lambda: sys.exit(__doc__))()
    except subprocess.CalledProcessError as e:
        # The failing step (the test host tool, ansible-playbook) has said why above; no traceback.
        step = next((Path(c).name for c in e.cmd if c.endswith((".py", "ansible-playbook"))), Path(e.cmd[0]).name)
        sys.exit(f"demo: {step} failed (exit {e.returncode}); what it said is above")
