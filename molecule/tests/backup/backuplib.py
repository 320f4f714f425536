"""What the backup tests act through: the host with the databases, its repository and restic there
(fixtures, shared with the upgrade tests), a oneshot unit's run, the host's snapshots, row counts."""

from __future__ import annotations

import json

import pytest


def start(host, unit: str) -> str:
    """Start a oneshot unit, wait for it; its Result (success, exit-code, ...)."""
    host.run("systemctl start %s", unit)
    return host.check_output("systemctl show -p Result --value %s", unit)


def snapshots(restic, host_name: str) -> list[dict]:
    return json.loads(restic("snapshots", "--json", "--host", host_name))


def sql(host, db: str, query: str) -> str:
    """One query as postgres on the database server; its rows, tab-separated."""
    return host.check_output("runuser -u postgres -- psql -XAtq -d %s -c %s", db, query)


# Rows that users' work leaves, by database: what a restore must bring back.
COUNTS = {
    "exec_api": ["notebooks", "notebook_parameters", "notebook_executions"],
    "superset": ["dashboards", "slices", "ab_user"],
    "jupyterhub": ["users"],
}


def counts(host) -> dict[str, int]:
    return {f"{db}.{table}": int(sql(host, db, f"SELECT count(*) FROM {table}")) for db, tables in COUNTS.items()
            for table in tables}  # fmt: skip


@pytest.fixture(scope="session")
def bk(group_hosts):
    """The host that holds the databases (root over SSH)."""
    return group_hosts("postgresql")[0]


@pytest.fixture(scope="session")
def repository(bk, hostvars) -> str:
    repo = hostvars[bk.backend.get_hostname()].get("platform_backup_repository", "")
    if not repo:
        pytest.skip("this scenario sets no platform_backup_repository: no backups are taken")
    return repo


@pytest.fixture(scope="session")
def restic(bk, repository):
    """restic(*args) -> stdout, with the host's repository and password; fails on an error."""

    def call(*args: str) -> str:
        out = bk.run("platform-backup restic" + " %s" * len(args), *args)
        assert out.rc == 0, f"restic {' '.join(args)}: rc {out.rc} {out.stderr[-800:]}"
        return out.stdout

    return call
