"""``exec-api``: the command line for users of the exec API.

Token: ``$EXEC_API_TOKEN``, or the file ``$EXEC_API_TOKEN_FILE``, or ``$JUPYTERHUB_API_TOKEN``,
or ``~/.config/exec-api/token`` (``--token-file`` overrides).  URL: ``--url`` or
``$EXEC_API_URL``.  Results are printed as JSON.

``exec-api retention`` is the operator's command (run by ``exec-api-retention.timer`` as the
service user, with the service's settings): it deletes finished executions and their outputs
older than EXEC_API_RETENTION_DAYS or beyond each user's newest EXEC_API_RETENTION_PER_USER.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from exec_api.client import ExecApiClient, ExecApiError


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _params(pairs: list[str], raw: str | None) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(raw) if raw else {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"-p expects NAME=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k] = _value(v)
    return out


def _print(obj: Any) -> None:
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    elif isinstance(obj, list):
        obj = [o.model_dump(mode="json") if isinstance(o, BaseModel) else o for o in obj]
    print(json.dumps(obj, indent=2, default=str))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="exec-api", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--url", default=os.environ.get("EXEC_API_URL") or None, help="default: $EXEC_API_URL"
    )
    ap.add_argument("--token-file", default=None)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("register", help="register a notebook of your notebook area")
    p.add_argument("path", help="path relative to your notebook area")
    p.add_argument("--name", required=True)
    p.add_argument("--description")
    p.add_argument("--tag", action="append", dest="tags")
    p.add_argument(
        "--no-detect",
        action="store_true",
        help="do not declare the parameters of the 'parameters' cell",
    )

    sub.add_parser("notebooks", help="list your registered notebooks")

    p = sub.add_parser("params", help="list a notebook's declared parameters")
    p.add_argument("notebook_id", type=int)

    p = sub.add_parser("declare", help="declare a parameter")
    p.add_argument("notebook_id", type=int)
    p.add_argument("name")
    p.add_argument(
        "--type",
        default="str",
        choices=["int", "float", "str", "bool", "list", "dict", "date", "datetime"],
    )
    p.add_argument("--default", type=_value, default=None, help="JSON (or a plain string)")
    p.add_argument("--required", action="store_true")
    p.add_argument("--description")
    p.add_argument(
        "--rules", type=json.loads, default=None, help='JSON, e.g. \'{"min": 1, "max": 10}\''
    )

    p = sub.add_parser("run", help="run a notebook (by id or by path)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--id", type=int, dest="notebook_id")
    g.add_argument("--path")
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="VALUE is JSON if it parses, else a string",
    )
    p.add_argument("--params-json")
    p.add_argument("--timeout", type=int)
    p.add_argument("--wait", action="store_true", help="wait for the outcome")
    p.add_argument("-o", "--output", help="with --wait: save the output notebook here")

    p = sub.add_parser("wait", help="wait for an execution to finish")
    p.add_argument("execution_id", type=int)
    p.add_argument("--timeout", type=float, default=3600)

    p = sub.add_parser("status", help="show an execution")
    p.add_argument("execution_id", type=int)

    p = sub.add_parser("cancel", help="cancel an execution")
    p.add_argument("execution_id", type=int)

    p = sub.add_parser("output", help="download an execution's output notebook")
    p.add_argument("execution_id", type=int)
    p.add_argument("-o", "--output", help="file (default: stdout)")

    p = sub.add_parser("history", help="list your executions, newest first")
    p.add_argument("--notebook-id", type=int)
    p.add_argument("--status")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--skip", type=int, default=0)
    p.add_argument("--schedule-id", type=int)

    p = sub.add_parser("schedule", help="run a notebook on a cron expression in a time zone")
    p.add_argument("notebook_id", type=int)
    p.add_argument("cron", help="five fields, e.g. '0 6 1 * *' (06:00 on the 1st)")
    p.add_argument("--timezone", default="UTC", help="IANA name, e.g. Europe/Berlin")
    p.add_argument("--name")
    p.add_argument(
        "-p", "--param", action="append", default=[], metavar="NAME=VALUE",
        help="VALUE is JSON if it parses, else a string",
    )  # fmt: skip
    p.add_argument("--params-json")
    p.add_argument("--ends-at", help="ISO 8601 instant; nothing is planned after it")
    p.add_argument("--overlap", choices=["skip", "queue", "cancel"], default="skip")
    p.add_argument("--catchup", choices=["none", "latest", "all"], default="latest")
    p.add_argument("--retries", type=int, default=0, help="retries of a failed or timed-out run")
    p.add_argument("--retry-backoff", type=int, default=60, help="seconds, doubled each retry")
    p.add_argument("--timeout", type=int)

    sub.add_parser("schedules", help="list your schedules")
    for verb, text in [
        ("pause", "pause a schedule"),
        ("resume", "resume a schedule (from now on)"),
        ("run-now", "run a schedule once now"),
        ("unschedule", "delete a schedule (its executions stay)"),
    ]:
        sub.add_parser(verb, help=text).add_argument("schedule_id", type=int)

    p = sub.add_parser(
        "retention",
        help="(operator, on the API's host) delete old finished executions and their outputs",
    )
    p.add_argument("--days", type=int, help="default: EXEC_API_RETENTION_DAYS")
    p.add_argument("--per-user", type=int, help="default: EXEC_API_RETENTION_PER_USER")
    p.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    return ap


def retention(args: argparse.Namespace) -> int:
    """Runs against the database with the service's settings (no API, no token)."""
    import logging

    from exec_api.core.config import get_settings
    from exec_api.core.db import get_sessionmaker
    from exec_api.services import retention as r

    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s %(message)s")
    with get_sessionmaker()() as db:
        rep = r.apply(db, settings, days=args.days, per_user=args.per_user, dry_run=args.dry_run)
    _print(
        {
            "dry_run": args.dry_run,
            "executions_deleted": 0 if args.dry_run else rep.rows,
            "executions_to_delete": rep.rows if args.dry_run else 0,
            "outputs_deleted": rep.files,
            "orphan_outputs_deleted": rep.orphan_files,
        }
    )
    return 0


def run(args: argparse.Namespace, api: ExecApiClient) -> int:
    c = args.cmd
    if c == "register":
        _print(
            api.register_notebook(
                args.path,
                args.name,
                description=args.description,
                tags=args.tags,
                detect_parameters=not args.no_detect,
            )
        )
    elif c == "notebooks":
        _print(api.notebooks())
    elif c == "params":
        _print(api.parameters(args.notebook_id))
    elif c == "declare":
        _print(
            api.declare_parameter(
                args.notebook_id,
                args.name,
                args.type,
                default=args.default,
                required=args.required,
                description=args.description,
                rules=args.rules,
            )
        )
    elif c == "run":
        ex = api.run(
            notebook_id=args.notebook_id,
            path=args.path,
            parameters=_params(args.param, args.params_json),
            timeout_seconds=args.timeout,
        )
        if args.wait:
            ex = api.wait(ex.id)
            if args.output and ex.output_path:
                api.download_output(ex.id, args.output)
        _print(ex)
        return 0 if ex.status in ("succeeded", "queued", "running") else 1
    elif c == "wait":
        ex = api.wait(args.execution_id, timeout=args.timeout)
        _print(ex)
        return 0 if ex.status == "succeeded" else 1
    elif c == "status":
        _print(api.execution(args.execution_id))
    elif c == "cancel":
        _print(api.cancel(args.execution_id))
    elif c == "output":
        data = api.output(args.execution_id)
        if args.output:
            Path(args.output).write_bytes(data)
        else:
            sys.stdout.write(data.decode())
    elif c == "history":
        _print(
            api.history(
                notebook_id=args.notebook_id,
                status=args.status,
                schedule_id=args.schedule_id,
                skip=args.skip,
                limit=args.limit,
            )
        )
    elif c == "schedule":
        fields: dict[str, Any] = {
            "parameters": _params(args.param, args.params_json),
            "overlap_policy": args.overlap,
            "catchup_policy": args.catchup,
            "retry_attempts": args.retries,
            "retry_backoff_seconds": args.retry_backoff,
        }
        optional = {"name": args.name, "ends_at": args.ends_at, "timeout_seconds": args.timeout}
        fields |= {k: v for k, v in optional.items() if v is not None}
        _print(api.create_schedule(args.notebook_id, args.cron, timezone=args.timezone, **fields))
    elif c == "schedules":
        _print(api.schedules())
    elif c == "pause":
        _print(api.pause_schedule(args.schedule_id))
    elif c == "resume":
        _print(api.resume_schedule(args.schedule_id))
    elif c == "run-now":
        _print(api.run_schedule(args.schedule_id))
    elif c == "unschedule":
        api.delete_schedule(args.schedule_id)
    return 0


def main(argv: list[str] | None = None, api: ExecApiClient | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "retention":
        return retention(args)
    try:
        token = Path(args.token_file).read_text().strip() if args.token_file else None
        client = api or ExecApiClient(args.url, token)
        with client:
            return run(args, client)
    except ExecApiError as e:
        print(f"exec-api: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
