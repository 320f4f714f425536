"""What the backup tests act through: a oneshot unit's run, and the host's snapshots."""

from __future__ import annotations

import json


def start(host, unit: str) -> str:
    """Start a oneshot unit, wait for it; its Result (success, exit-code, ...)."""
    host.run("systemctl start %s", unit)
    return host.check_output("systemctl show -p Result --value %s", unit)


def snapshots(restic, host_name: str) -> list[dict]:
    return json.loads(restic("snapshots", "--json", "--host", host_name))
