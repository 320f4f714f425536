#!/usr/bin/env python3
"""Each pin of the platform beside the newest release, so staying current is a routine:

    .venv/bin/python tools/pins.py          # a table; exit 0
    .venv/bin/python tools/pins.py --behind # only the pins with a newer release

For every direct dependency of every environment the roles build (the `.in` files of the hub,
the users' servers and Superset, the exec API's pyproject.toml) and of the controller's tools
(tools/requirements.in): the version its lock holds, the newest release on PyPI, and whether
the requirement as written admits it (a newer release outside it needs the requirement changed,
then a new lock and the tests). Releases that are not on PyPI (Keycloak, PostgreSQL from Debian)
are listed with where to look. One line of error when PyPI cannot be reached.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
# environment -> (its direct requirements, its lock)
ENVIRONMENTS = {
    "hub": ("roles/jupyterhub/files/requirements-hub.in", "roles/jupyterhub/files/requirements-hub.txt"),
    "user servers": ("roles/jupyterhub/files/requirements-user.in", "roles/jupyterhub/files/requirements-user.txt"),
    "superset": ("roles/superset/files/requirements.in", "roles/superset/files/requirements.txt"),
    "exec API": ("files/exec_api/pyproject.toml", "files/exec_api/uv.lock"),
    "controller tools": ("tools/requirements.in", "tools/requirements.txt"),
}
# Pinned elsewhere, released elsewhere: (what, where the pin is, where releases are announced).
ELSEWHERE = [
    ("keycloak", "roles/keycloak/defaults/main.yml: keycloak_version (with keycloak_archive_checksum)",
     "https://www.keycloak.org/downloads"),
    ("postgresql", "roles/postgresql/defaults/main.yml: postgresql_version (Debian's package of the release)",
     "the Debian release's postgresql package"),
]  # fmt: skip


@dataclass
class Pin:
    environment: str
    requirement: Requirement
    locked: str | None
    newest: str | None = None

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)

    def behind(self) -> bool:
        return bool(self.locked and self.newest and Version(self.newest) > Version(self.locked))

    def admitted(self) -> bool:
        """Whether the requirement as written admits the newest release."""
        return bool(self.newest) and self.requirement.specifier.contains(self.newest, prereleases=False)


def direct_requirements(path: Path) -> list[Requirement]:
    """The requirements a .in file or a pyproject.toml names (comments and options skipped)."""
    if path.suffix == ".toml":
        lines = tomllib.loads(path.read_text())["project"]["dependencies"]
    else:
        lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    out = []
    for line in lines:
        if not line or line.startswith("-"):
            continue
        try:
            out.append(Requirement(line))
        except InvalidRequirement as e:
            raise SystemExit(f"pins: {path.relative_to(ROOT)}: cannot read {line!r}: {e}") from e
    return out


def locked_versions(path: Path) -> dict[str, str]:
    """name -> version from a uv.lock or a `uv pip compile` output."""
    text = path.read_text()
    if path.name == "uv.lock":
        return {canonicalize_name(p["name"]): p["version"] for p in tomllib.loads(text)["package"] if "version" in p}
    pairs = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s\\;]+)", text, re.M)
    return {canonicalize_name(n): v for n, v in pairs}


def pypi_newest(name: str) -> str | None:
    """The newest final release of name on PyPI (its JSON API), None when it has none."""
    with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=30) as r:
        releases = json.load(r)["releases"]
    finals = []
    for v, files in releases.items():
        try:
            ver = Version(v)
        except InvalidVersion:
            continue
        if not ver.is_prerelease and not ver.is_devrelease and any(not f.get("yanked") for f in files):
            finals.append(ver)
    return str(max(finals)) if finals else None


def pins(newest: Callable[[str], str | None] = pypi_newest) -> list[Pin]:
    # uv, which builds every environment on the hosts, pinned by the python_env role.
    uv = re.search(
        r'^python_env_uv_version: "?([^"\s]+)', (ROOT / "roles/python_env/defaults/main.yml").read_text(), re.M
    )
    out = [Pin("host environments' builder", Requirement(f"uv=={uv.group(1)}"), uv.group(1), newest("uv"))]
    for env, (direct, lock) in ENVIRONMENTS.items():
        locked = locked_versions(ROOT / lock)
        for req in direct_requirements(ROOT / direct):
            pin = Pin(env, req, locked.get(canonicalize_name(req.name)))
            pin.newest = newest(pin.name)
            out.append(pin)
    return out


def table(found: list[Pin], only_behind: bool = False) -> str:
    rows = [("environment", "package", "locked", "newest", "status")]
    for p in found:
        if only_behind and not p.behind():
            continue
        if not p.behind():
            status = "current"
        elif p.admitted():
            status = "newer release: re-lock"
        else:
            status = f"newer release outside {p.requirement.specifier}: change the requirement"
        rows.append((p.environment, p.name, p.locked or "-", p.newest or "-", status))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows]
    lines += ["", "Not on PyPI:"] + [f"  {what}: {where}; releases: {src}" for what, where, src in ELSEWHERE]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    try:
        found = pins()
    except (urllib.error.URLError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        print(f"pins: cannot reach PyPI ({reason}): the locked versions are in the lock files", file=sys.stderr)
        return 1
    print(table(found, only_behind="--behind" in argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
