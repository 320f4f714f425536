"""The previous release of this repository, converged on the upgrade scenario's hosts as an
operator ran it then (molecule/upgrade/converge.yml runs this; the upgrade tests use `previous`).

    release.py INVENTORY_DIR

The release is the commit named in molecule/upgrade/previous-release, exported with `git archive`
beside molecule's inventory. It runs with its own roles, plugins, wiring (group_vars) and test
provider, against an inventory of its own that holds molecule's hosts, the scenario's settings
and molecule's secrets directory (a link): the secrets the current code finds are the ones the
previous release generated, as on a real site.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hostlib import ROOT, playbook_runner

PINNED = ROOT / "molecule/upgrade/previous-release"


def commit() -> str:
    lines = [ln.strip() for ln in PINNED.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return lines[0]


def previous(inventory_dir: Path) -> tuple[Path, Path]:
    """The previous release's checkout and its inventory, made once beside molecule's inventory."""
    base = inventory_dir.parent / "previous-release"
    rev = commit()
    tree = base / rev
    if not (tree / "site.yml").is_file():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    inv = base / "inventory"
    shutil.rmtree(inv, ignore_errors=True)
    inv.mkdir(parents=True)
    shutil.copy(inventory_dir / "ansible_inventory.yml", inv / "hosts.yml")
    secrets = inventory_dir / ".secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    links = {
        "group_vars": tree / "group_vars",
        "scenario.yml": tree / "molecule/shared/external_idp.yml",
        "upgrade.yml": ROOT / "molecule/upgrade/inventory.yml",
        ".secrets": secrets,
    }
    for name, target in links.items():
        (inv / name).symlink_to(target)
    return tree, inv


def main() -> int:
    inventory_dir = Path(sys.argv[1]).resolve()
    os.environ.setdefault("ANSIBLE_CONFIG", str(inventory_dir.parent / "ansible.cfg"))  # molecule's
    tree, inv = previous(inventory_dir)
    start = time.monotonic()
    out = playbook_runner(inv, tree / "molecule/shared/converge.yml", root=tree)()
    print(out.output)
    print(f"previous release {commit()[:12]} converged: rc {out.rc}, {time.monotonic() - start:.0f} s")
    return out.rc


if __name__ == "__main__":
    sys.exit(main())
