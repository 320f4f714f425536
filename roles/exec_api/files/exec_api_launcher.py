#!/usr/bin/python3
"""Starts notebook runs as their owners, for an exec API that runs without privileges.

The exec API's systemd runner builds a `systemd-run` command line that starts a user's warm
runner (which forks each of that user's runs) as the notebook owner's Unix user, in a transient
unit with resource limits. Starting a unit for
another user takes root (or a polkit grant that would also allow `User=root`). Instead, the API
runs as its own system user and its runner is pointed at this program's client side:

    EXEC_API_SYSTEMD_RUN_PATH=/usr/local/libexec/exec-api/systemd-run   (a link to this file)
    EXEC_API_SYSTEMCTL_PATH=/usr/local/libexec/exec-api/systemctl       (a link to this file)

The client passes its argv and its stdin/stdout/stderr (SCM_RIGHTS) over a Unix socket to the
root side (`exec-api-launcher.socket`, Accept=yes, one `exec-api-launcher@.service` per
connection). The root side accepts only the API's user as peer, checks the request against
/etc/exec-api/launcher.json and only then executes the real systemd-run or systemctl with the
client's descriptors, and sends back the exit status. What it accepts:

- run: the unit names and slice the API uses (`exec-api-warm-<12 hex>.service`); a target uid
  that is a member of the platform's users group and at least `min_uid` (never root or a system
  account), with its own primary gid, HOME, USER and LOGNAME (and how many kernels it forks
  ahead, EXEC_API_WARM_READY); only allowed unit properties, each
  at most once, every required limit and sandbox setting present (the sandbox's with exactly the
  configured values), a working directory inside the user's home, and, bound into the unit's
  otherwise empty /home, only that home; and exactly the configured warm runner command.
- stop: `stop --no-block <one of the API's warm runner units>`.

Anything else is refused with exit status 126 and a reason on the client's stderr.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import socket
import struct
import subprocess
import sys

CONFIG = os.environ.get("EXEC_API_LAUNCHER_CONFIG", "/etc/exec-api/launcher.json")
SOCKET = os.environ.get("EXEC_API_LAUNCHER_SOCKET", "/run/exec-api-launcher.sock")
# A user's warm runner, which forks that user's runs (exec-api-warm-<hex>).
UNIT_RE = re.compile(r"^exec-api-warm-[0-9a-f]{12}\.service$")
STOP_RE = UNIT_RE
# How many kernels the warm runner forks ahead.
READY_RE = re.compile(r"[0-9]{1,2}")
REFUSED = 126
FLAGS = {"--quiet", "--collect", "--wait", "--pipe", "--service-type=exec"}


class Refused(Exception):
    pass


# ------------------------------------------------------------------------------ checks
def check_run(argv: list[str], cfg: dict) -> list[str]:
    """Return the systemd-run command to execute for a run request, or raise Refused."""
    if "--" not in argv:
        raise Refused("no command after --")
    sep = argv.index("--")
    opts, command = argv[:sep], argv[sep + 1 :]
    if command != cfg["warm_command"]:
        raise Refused(f"command {command!r} is not the exec API's warm runner command")
    seen: dict[str, str] = {}
    env: dict[str, str] = {}
    props: dict[str, str] = {}
    i = 0
    while i < len(opts):
        o = opts[i]
        if o in FLAGS:
            seen[o] = ""
        elif o == "-p" and i + 1 < len(opts):
            key, sep_, value = opts[i + 1].partition("=")
            if not sep_ or key not in cfg["allowed_properties"]:
                raise Refused(f"unit property {opts[i + 1]!r} is not allowed")
            if key in props:  # list properties add up: a second BindPaths= would bind more
                raise Refused(f"unit property {key} given twice")
            props[key] = value
            i += 1
        elif o.startswith("--setenv="):
            key, _, value = o[len("--setenv=") :].partition("=")
            fixed = cfg.get("environment", {})
            if key in fixed:
                if value != fixed[key]:
                    raise Refused(f"environment variable {key} must be {fixed[key]}")
            elif key not in {"HOME", "USER", "LOGNAME", "PYDEVD_DISABLE_FILE_VALIDATION", "EXEC_API_WARM_READY"}:
                raise Refused(f"environment variable {key!r} is not allowed")
            if key == "EXEC_API_WARM_READY" and not READY_RE.fullmatch(value):
                raise Refused("EXEC_API_WARM_READY must be a number from 0 to 99")
            env[key] = value
        elif o.split("=", 1)[0] in {"--unit", "--slice", "--uid", "--gid"} and "=" in o:
            key, value = o.split("=", 1)
            seen[key] = value
        else:
            raise Refused(f"option {o!r} is not allowed")
        i += 1
    if not UNIT_RE.match(seen.get("--unit", "")):
        raise Refused("unit name is not one of the exec API's warm runner units")
    if seen.get("--slice") != cfg["slice"]:
        raise Refused(f"slice must be {cfg['slice']}")
    try:
        user = pwd.getpwuid(int(seen.get("--uid", "")))
    except (ValueError, KeyError):
        raise Refused("--uid is not a user of this host") from None
    members = set(grp.getgrnam(cfg["users_group"]).gr_mem)
    if user.pw_uid < cfg["min_uid"] or user.pw_name not in members:
        raise Refused(f"{user.pw_name} is not a platform user (group {cfg['users_group']})")
    if seen.get("--gid") != str(user.pw_gid):
        raise Refused("--gid must be the user's primary group")
    if (env.get("HOME"), env.get("USER"), env.get("LOGNAME")) != (user.pw_dir, user.pw_name, user.pw_name):
        raise Refused("HOME, USER and LOGNAME must be the user's own")
    missing = [p for p in cfg["required_properties"] if p not in props]
    if missing:
        raise Refused(f"required unit properties missing: {', '.join(missing)}")
    for key, value in cfg.get("fixed_properties", {}).items():
        if props.get(key) != value:
            raise Refused(f"unit property {key} must be {value}")
    workdir = os.path.realpath(props.get("WorkingDirectory", user.pw_dir))
    home = os.path.realpath(user.pw_dir)
    if workdir != home and not workdir.startswith(home + os.sep):
        raise Refused("WorkingDirectory must be inside the user's home")
    if "BindPaths" in props and props["BindPaths"] != user.pw_dir:
        raise Refused("BindPaths must be the user's home, and only it")
    return [cfg["systemd_run"], *argv]


def check_stop(argv: list[str], cfg: dict) -> list[str]:
    if len(argv) != 3 or argv[:2] != ["stop", "--no-block"] or not STOP_RE.match(argv[2]):
        raise Refused("only `stop --no-block <exec API warm runner unit>` is allowed")
    return [cfg["systemctl"], *argv]


# ------------------------------------------------------------------------------ root side
def serve() -> int:
    """One connection on fd 0 (systemd socket activation with Accept=yes)."""
    with open(CONFIG, encoding="utf-8") as f:
        cfg = json.load(f)
    conn = socket.socket(fileno=0)
    uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
    if uid != pwd.getpwnam(cfg["client_user"]).pw_uid:
        print(f"exec-api-launcher: refused peer uid {uid}", file=sys.stderr)
        return 1
    msg, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
    try:
        request = json.loads(msg.decode())
        if len(fds) != 3:
            raise Refused("expected stdin, stdout and stderr")
        mode, argv = request["mode"], request["argv"]
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise Refused("argv must be a list of strings")
        command = check_run(argv, cfg) if mode == "run" else check_stop(argv, cfg) if mode == "stop" else None
        if command is None:
            raise Refused(f"unknown mode {mode!r}")
    except (Refused, ValueError, KeyError) as e:
        if len(fds) == 3:
            os.write(fds[2], f"exec-api-launcher: refused: {e}\n".encode())
        print(f"exec-api-launcher: refused: {e}", file=sys.stderr)
        conn.sendall(json.dumps({"rc": REFUSED}).encode())
        return 0
    what = argv[2] if mode == "stop" else " ".join(a for a in argv if a.startswith(("--unit=", "--uid=")))
    print(f"exec-api-launcher: {mode} {what}", file=sys.stderr)
    rc = subprocess.run(command, stdin=fds[0], stdout=fds[1], stderr=fds[2], check=False).returncode
    for fd in fds:
        os.close(fd)
    conn.sendall(json.dumps({"rc": rc}).encode())
    return 0


# ------------------------------------------------------------------------------ client side
def client(mode: str, argv: list[str]) -> int:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(SOCKET)
    except OSError as e:
        print(f"exec-api-launcher: cannot reach {SOCKET}: {e}", file=sys.stderr)
        return REFUSED
    socket.send_fds(conn, [json.dumps({"mode": mode, "argv": argv}).encode()], [0, 1, 2])
    reply = b""
    while chunk := conn.recv(4096):
        reply += chunk
    try:
        return int(json.loads(reply.decode())["rc"])
    except (ValueError, KeyError):
        print("exec-api-launcher: no answer from the launcher", file=sys.stderr)
        return REFUSED


def main() -> int:
    name = os.path.basename(sys.argv[0])
    if name == "systemd-run":
        return client("run", sys.argv[1:])
    if name == "systemctl":
        return client("stop", sys.argv[1:])
    if sys.argv[1:2] == ["serve"]:
        return serve()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
