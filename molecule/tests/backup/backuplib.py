"""What the backup tests act through: a oneshot unit's run, and the host's snapshots."""

from __future__ import annotations

import json


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
