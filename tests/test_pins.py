"""tools/pins.py, offline: every direct requirement of every environment has a locked version
(a requirement left out of its lock would install unlocked), and the table says what to do for a
pin behind the newest release. The newest releases are stand-ins here; the script asks PyPI."""

from __future__ import annotations

import runpy
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
P = runpy.run_path(str(ROOT / "tools/pins.py"))


def test_every_direct_requirement_is_locked():
    found = P["pins"](newest=lambda name: None)
    unlocked = [f"{p.environment}: {p.name}" for p in found if p.locked is None]
    assert not unlocked, f"not in their lock: {unlocked}"
    assert {p.environment for p in found} >= set(P["ENVIRONMENTS"]), "an environment has no requirements"
    assert any(p.name == "uv" for p in found), "uv, the python_env role's pin, is not listed"


def test_the_table_says_what_a_newer_release_needs():
    pin = P["Pin"]
    rows = [pin("hub", Requirement("jupyterhub>=5.2,<6"), "5.5.4", "6.1.1"),
            pin("hub", Requirement("pydantic>=2.7,<3"), "2.14.3", "2.14.4"),
            pin("hub", Requirement("httpx>=0.27"), "0.28.1", "0.28.1")]  # fmt: skip
    text = P["table"](rows).splitlines()
    assert "newer release outside <6,>=5.2: change the requirement" in text[1]
    assert text[2].endswith("newer release: re-lock") and text[3].endswith("current")
    assert len(P["table"](rows, only_behind=True).split("\n\n")[0].splitlines()) == 3  # header + 2


def test_a_lock_file_is_read_with_extras_and_hashes(tmp_path):
    lock = tmp_path / "requirements.txt"
    lock.write_text("uvicorn[standard]==0.30.1 \\\n    --hash=sha256:ab\nPyYAML==6.0.2 ; python_version >= '3'\n")
    assert P["locked_versions"](lock) == {"uvicorn": "0.30.1", "pyyaml": "6.0.2"}
