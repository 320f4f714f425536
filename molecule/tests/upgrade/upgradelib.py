"""What the upgrade tests make and compare: users' work as they do it (files in a home, a template
notebook with typed parameters and its runs, a running server, a dashboard), and the platform's
state by which "nothing was lost" is judged: row counts and checksums of every table, checksums
of every file in the homes, the execution history as the API returns it."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field

from backuplib import sql
from hostlib import Hub, api_client
from supersetlib import SupersetSession

DATABASES = ("exec_api", "jupyterhub", "superset")
REPORT = "upgrade-report"  # alice's template notebook (~/notebooks/upgrade-report.ipynb)
RUNS = [{"month": 1, "region": "north"}, {"month": 2, "region": "south"}, {"month": 3, "region": "east"}]
DASHBOARD = "Kept across upgrades"
# Files in the homes that change without anyone's work in them: the backup leaves out .cache and
# the servers' runtime files (roles/backup); a kernel's IPython history is written by every kernel.
VOLATILE_FILES = ("/.cache/", "/.local/share/jupyter/runtime/", "/.ipython/profile_default/history.sqlite")


def notebook_json() -> dict:
    cell = lambda i, src, tags: {"cell_type": "code", "execution_count": None, "id": f"c{i}",  # noqa: E731
                                 "metadata": {"tags": tags}, "outputs": [], "source": src}  # fmt: skip
    return {"cells": [cell(0, "month = 1\nregion = 'north'", ["parameters"]),
                      cell(1, "print(f'report for {region}, month {month}:', month * 100)", [])],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}  # fmt: skip


@dataclass
class Work:
    notebook_id: int
    dashboard_id: int
    file_digest: str  # sha256 of alice's data file, as she wrote it
    before: dict = field(default_factory=dict)

    @classmethod
    def make(cls, bk, hub: Hub, token: str, api_url: str, ca: str, browser, domain: str, admin: dict) -> Work:
        user = hub.user
        files = {f"/home/{user}/notebooks/{REPORT}.ipynb": json.dumps(notebook_json()).encode(),
                 f"/home/{user}/results/notes.md": b"# what I found\nsee measurements.bin\n"}  # fmt: skip
        for path, content in files.items():
            b64 = base64.b64encode(content).decode()
            made = bk.run("runuser -u %s -- sh -c %s", user,
                          f"mkdir -p $(dirname {path}) && echo {b64} | base64 -d > {path}")  # fmt: skip
            assert made.rc == 0, made.stderr
        data = f"/home/{user}/results/measurements.bin"
        made = bk.run("runuser -u %s -- sh -c %s", user, f"head -c 262144 /dev/urandom > {data} && sha256sum {data}")
        assert made.rc == 0, made.stderr
        digest = made.stdout.split()[0]
        with api_client(api_url, ca, token) as api:
            mine = {n.name: n.id for n in api.notebooks()}  # a verify run again on the same hosts
            if REPORT in mine:
                nb = api.notebook(mine[REPORT])
            else:
                nb = api.register_notebook(f"{REPORT}.ipynb", name=REPORT, detect_parameters=False)
                api.declare_parameter(nb.id, "month", "int", required=True, rules={"min": 1, "max": 12})
                api.declare_parameter(nb.id, "region", "str", default="north")
            for params in RUNS:
                ex = api.wait(api.run(notebook_id=nb.id, parameters=params).id, timeout=300, poll=0.5)
                assert ex.status == "succeeded", f"run {params}: {ex.status} {ex.error_message}"
        hub.start()
        carol = SupersetSession(browser, f"https://superset.{domain}", ca, admin)
        try:
            made = carol.post("/api/v1/dashboard/", {"dashboard_title": DASHBOARD, "published": True})
            assert made.status_code == 201, f"carol's dashboard: HTTP {made.status_code} {made.text[:300]}"
            dashboard_id = made.json()["id"]
        finally:
            carol.close()
        return cls(nb.id, dashboard_id, digest)


# Rows that must come back though their table also holds rows the services make by themselves:
# users' hub tokens (the idle culler's token is made anew at each hub start).
# And the rows of Superset's users (carol's dashboard) in tables that also hold the platform's
# provisioned dashboard, which a new release may change (owned by platform-provisioner).
_PROVISIONER = "(SELECT id FROM ab_user WHERE username = 'platform-provisioner')"
KEPT_ROWS = {
    "jupyterhub.users_api_tokens": ("jupyterhub", "SELECT hashed, user_id FROM api_tokens WHERE user_id IS NOT NULL"),
    "superset.users_dashboards": (
        "superset",
        "SELECT id, dashboard_title, slug, published FROM dashboards "
        f"WHERE created_by_fk IS DISTINCT FROM {_PROVISIONER}",
    ),
}


def table_columns(bk) -> dict[str, list[str]]:
    """'db.table' -> its columns in order, for every table of every service database."""
    out: dict[str, list[str]] = {}
    query = ("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
             "ORDER BY table_name, ordinal_position")  # fmt: skip
    for db in DATABASES:
        for line in sql(bk, db, query).splitlines():
            table, column = line.split("|", 1)
            out.setdefault(f"{db}.{table}", []).append(column)
    return out


def table_sums(bk, columns: dict[str, list[str]]) -> dict[str, str]:
    """'db.table' -> 'rows:md5' for every table of `columns` (the md5 of its rows, those columns
    only, as text, in a fixed order: a migration that adds a column or a table changes no sum),
    and of the rows of KEPT_ROWS."""
    out = {}
    for name, (db, query) in KEPT_ROWS.items():
        out[name] = sql(bk, db, f"SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, E'\\n' "
                                f"ORDER BY x::text)), '-') FROM ({query}) x")  # fmt: skip
    for db in DATABASES:
        tables = {k.split(".", 1)[1]: v for k, v in columns.items() if k.startswith(db + ".")}
        query = " UNION ALL ".join(
            f"SELECT '{t}', count(*) || ':' || coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), '-') "
            f"FROM (SELECT {', '.join(f'{chr(34)}{c}{chr(34)}' for c in cols)} FROM public.{t}) x"
            for t, cols in sorted(tables.items()))  # fmt: skip
        for line in sql(bk, db, query).splitlines():
            name, value = line.split("|", 1)
            out[f"{db}.{name}"] = value
    return out


def file_sums(bk) -> dict[str, str]:
    """path -> sha256 of every file in the homes, but those that change by themselves."""
    listing = bk.check_output("cd / && find /home -type f -print0 | sort -z | xargs -0r sha256sum")
    sums = {}
    for line in listing.splitlines():
        digest, path = line.split("  ", 1)
        if not any(v in path for v in VOLATILE_FILES):
            sums[path] = digest
    return sums


def history(api_url: str, ca: str, token: str, notebook_id: int) -> list[dict]:
    """The notebook's runs as the API returns them, each with the sha256 of its output notebook."""
    keep = ("id", "status", "parameters_used", "submitted_at", "completed_at", "output_path")
    with api_client(api_url, ca, token) as api:
        runs = [{k: v for k, v in r.model_dump(mode="json").items() if k in keep}
                for r in api.history(notebook_id=notebook_id)]  # fmt: skip
        for r in runs:
            r["output_sha256"] = hashlib.sha256(api.output(r["id"])).hexdigest()
    return sorted(runs, key=lambda r: r["id"])


def state(bk, work: Work, api_url: str, ca: str, token: str, columns: dict[str, list[str]] | None = None) -> dict:
    """The state to compare: `columns` those of an earlier state (an upgrade may add some), else
    the tables' own now."""
    columns = columns or table_columns(bk)
    return {"tables": table_sums(bk, columns), "columns": columns, "files": file_sums(bk),
            "history": history(api_url, ca, token, work.notebook_id)}  # fmt: skip


def changed_tables(before: dict[str, str], after: dict[str, str], touched: set[str], dropped: set[str]) -> dict:
    """The tables whose rows differ between two table_sums, but those the services change by
    themselves: in `touched` only their content (the count must stay), in `dropped` anything."""
    out = {}
    for name, (was, now) in differences(before, after).items():
        if name in dropped or (name in touched and was and now and was.split(":")[0] == now.split(":")[0]):
            continue
        out[name] = (was, now)
    return out


def differences(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple]:
    return {k: (before.get(k), after.get(k)) for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)}


def data_digest(hub: Hub) -> str:
    """The sha256 of alice's data file as her own server's kernel reads it."""
    kernel = hub.kernel()
    try:
        code = "import hashlib, os; print(hashlib.sha256(open(os.path.expanduser(" \
               "'~/results/measurements.bin'), 'rb').read()).hexdigest())"  # fmt: skip
        return kernel.run(code).strip()
    finally:
        kernel.close()


def dashboard_title(browser, domain: str, ca: str, person: dict, dashboard_id: int) -> str | None:
    """The title of a dashboard as the person sees it in Superset (after a login), None if not."""
    session = SupersetSession(browser, f"https://superset.{domain}", ca, person)
    try:
        r = session.get(f"/api/v1/dashboard/{dashboard_id}")
    finally:
        session.close()
    return r.json()["result"]["dashboard_title"] if r.status_code == 200 else None


def changed_tasks(output: str) -> list[str]:
    """The tasks an ansible-playbook run reported changed (for a failed idempotence check)."""
    found, task = [], ""
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line
        elif line.startswith("changed:"):
            found.append(f"{task} {line}")
    return found


def timed(fn, *args, **kw):
    start = time.monotonic()
    result = fn(*args, **kw)
    return result, time.monotonic() - start
