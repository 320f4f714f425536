"""Fixtures of the backup tests (marker `backup`): the database server, which in the all-in-one
scenario also holds the homes and the services' state, its repository (platform_backup_repository
of the inventory), and restic on it through `platform-backup restic` (the host's own settings)."""

from backuplib import bk, repository, restic  # noqa: F401 - the fixtures, shared with molecule/tests/upgrade
