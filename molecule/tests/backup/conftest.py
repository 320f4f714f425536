"""Fixtures of the backup tests (marker `backup`): the database server, which in the all-in-one
scenario also holds the homes and the services' state, its repository (platform_backup_repository
of the inventory), and restic on it through `platform-backup restic` (the host's own settings)."""

from __future__ import annotations

import pytest


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
