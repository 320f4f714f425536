"""Kernel fork server ("zygote").

Starting a Python kernel costs most of its time importing ipykernel and IPython.  The
zygote imports them once, then forks one fresh process per kernel on request, so each
execution still gets its own, isolated kernel process (copy-on-write memory, own session,
own process group) without paying the import cost.

Protocol (line-delimited JSON on stdin/stdout, spoken only by :mod:`exec_api.services.kernels`):

* request  ``{"op": "spawn", "connection_file": "/path/kernel.json", "cwd": "/dir"}``
  reply    ``{"pid": 1234}`` (or ``{"error": "..."}``)
* request  ``{"op": "kill", "pid": 1234}``  reply ``{"ok": true}``
* end of stdin (the owning worker exited or was killed): every kernel this zygote started
  is killed (whole process group) and the zygote exits.

The zygote is single-threaded and creates no ZMQ context before forking; all sockets are
created in the child by ``IPKernelApp.initialize``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from exec_api.services.preload import PRELOAD

os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")

_children: set[int] = set()


def _reap(*_: Any) -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _children.discard(pid)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _child(  # pragma: no cover
    connection_file: str, cwd: str | None, out_fd: int, new_session: bool = True
) -> None:
    # Runs in the forked child: never returns.  A run's kernel (warm runner) stays in its run's
    # process group, which ends with the run; the pool's kernels get a session each.
    try:
        if new_session:
            os.setsid()
        if out_fd >= 0:
            os.close(out_fd)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if cwd:
            os.chdir(cwd)
        # A notebook imports the modules beside it, as under `python -m ipykernel_launcher`,
        # also when this process was started with -P (the warm runner).
        if "" not in sys.path:
            sys.path.insert(0, "")
        from ipykernel.kernelapp import IPKernelApp

        app = IPKernelApp.instance()
        app.initialize(
            [
                "-f",
                connection_file,
                f"--IPKernelApp.parent_handle={os.getppid()}",
                "--HistoryManager.enabled=False",
            ]
        )
        app.start()
    except BaseException:  # noqa: BLE001 - the child must never return into the zygote loop
        os._exit(1)
    os._exit(0)


def _warm_up() -> None:
    import importlib
    import json as _json

    extra = os.environ.get("EXEC_API_ZYGOTE_PRELOAD_FILE")
    names = list(PRELOAD)
    if extra:
        with open(extra, encoding="utf-8") as fh:
            names += _json.load(fh)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001,S112 - best effort: a missing module only costs time
            continue


def main() -> None:  # pragma: no cover - exercised through the kernel pool in tests
    # Warm up: the imports a kernel needs, done once.
    _warm_up()
    os.environ.pop("EXEC_API_ZYGOTE_PRELOAD_FILE", None)

    signal.signal(signal.SIGCHLD, _reap)
    out = sys.stdout
    out_fd = out.fileno()
    for line in sys.stdin:
        try:
            req = json.loads(line)
        except ValueError:
            continue
        op = req.get("op")
        reply: dict[str, Any]
        if op == "spawn":
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(req["connection_file"], req.get("cwd"), out_fd)
            _children.add(pid)
            reply = {"pid": pid}
        elif op == "kill":
            pid = int(req["pid"])
            if pid in _children:
                _kill_group(pid)
            reply = {"ok": True}
        else:
            reply = {"error": f"unknown op {op!r}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    for pid in list(_children):
        _kill_group(pid)
    _reap()


if __name__ == "__main__":  # pragma: no cover
    main()
