#!/opt/exec-api/venv/bin/python
"""Runs two notebooks through the exec API as alice (one succeeds, one fails), so the dashboard has
executions to show. Run on the test host as root; alice's access token is in $E2E_TOKENS (from
../../shared/sso_check.py). Prints the two notebooks' names as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx

API = os.environ["E2E_API"]
with open(os.environ["E2E_TOKENS"]) as f:
    TOKEN = json.load(f)["alice"]
NAMES = {"ok": "superset-check-ok", "fail": "superset-check-fail"}
CELLS = {"ok": "print(n * 2)", "fail": "raise RuntimeError('superset check: this run fails on purpose')"}


def notebook(path: str, source: str) -> None:
    nb = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "p", "metadata": {"tags": ["parameters"]},
                   "outputs": [], "source": "n = 1"},
                  {"cell_type": "code", "execution_count": None, "id": "c", "metadata": {}, "outputs": [],
                   "source": source}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }  # fmt: skip
    with open(path, "w") as f:
        json.dump(nb, f)
    subprocess.run(["chown", "alice:alice", path], check=True)


def main() -> None:
    c = httpx.Client(
        base_url=API, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300, verify=os.environ.get("E2E_CA") or True
    )
    mine = {nb["name"]: nb["id"] for nb in c.get("/db/notebooks/user/alice").json()}
    for key, name in NAMES.items():
        path = f"/home/alice/notebooks/{name}.ipynb"
        notebook(path, CELLS[key])
        nid = mine.get(name)
        if nid is None:
            r = c.post("/db/notebooks", json={"name": name, "file_path": f"{name}.ipynb"})
            if r.status_code not in (200, 201):
                sys.exit(f"registering {name}: HTTP {r.status_code} {r.text}")
            nid = r.json()["id"]
        r = c.post("/execute-notebook", json={"notebook_id": nid, "parameters": {"n": 21}, "wait": True})
        status = r.json().get("execution", {}).get("status")
        want = "succeeded" if key == "ok" else "failed"
        if status != want:
            sys.exit(f"{name}: expected {want}, got HTTP {r.status_code} {r.text[:500]}")
    print(json.dumps(NAMES))


if __name__ == "__main__":
    main()
