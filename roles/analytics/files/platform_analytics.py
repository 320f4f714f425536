#!/usr/bin/python3
"""platform-analytics: a platform user's access to the analytics database (roles/analytics).

  platform-analytics sync NAME [GROUP...]
      Run by JupyterHub at each login, with the groups the identity provider gave. Makes NAME's
      login role and private schema in the analytics database if missing, makes its group
      memberships exactly the declared groups among GROUP (and `shared`'s writers when GROUP holds
      the admin group), and keeps NAME's password in ~NAME/.pgpass (0600, NAME's own): a new one
      when the line is missing, no longer works, or is older than the configured age.
      Prints one JSON line: {"user", "changed", "credentials"}.

Configuration: /etc/platform-analytics/sync.json (root only: it holds the sync role's password).
The sync role may do one thing: call analytics_platform.sync_user, which checks every name.
Exit status: 0 done, 2 bad input, 3 no such platform account, 4 the database refused or is down.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pwd
import re
import secrets
import stat
import sys
import time

CONFIG = "/etc/platform-analytics/sync.json"
PGPASS = ".pgpass"
MAX_PGPASS = 1 << 20


class Refused(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of `password` (RFC 5802/7677, as libpq's
    PQencryptPasswordConn makes it): the server never sees the password itself."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def pgpass_key(cfg: dict, name: str) -> str:
    return f"*:*:{cfg['dbname']}:{name}:"


# ------------------------------------------------------------------ the user's ~/.pgpass, safely
# Root never follows a name the user controls: the home is opened without following links and
# checked to be the user's; ~/.pgpass is read only when it is the user's own regular file, and
# replaced by renaming a new file (made here, 0600, given to the user) over it in that directory.
def open_home(pw: pwd.struct_passwd) -> int:
    try:
        fd = os.open(pw.pw_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise Refused(3, f"{pw.pw_name}'s home {pw.pw_dir} is not a directory of theirs ({e.strerror})") from None
    st = os.fstat(fd)
    if st.st_uid != pw.pw_uid:
        os.close(fd)
        raise Refused(3, f"{pw.pw_dir} does not belong to {pw.pw_name}")
    return fd


def read_pgpass(home: int, pw: pwd.struct_passwd) -> tuple[str | None, float]:
    """The file's text and modification time; (None, 0) when there is none. A link or anything
    but the user's own regular file is left alone (Refused)."""
    try:
        fd = os.open(PGPASS, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=home)
    except FileNotFoundError:
        return None, 0.0
    except OSError as e:
        raise Refused(
            2,
            f"~{pw.pw_name}/{PGPASS} is not a regular file ({e.strerror}): the platform leaves "
            "it alone; move it away for the platform to keep your database password there",
        ) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != pw.pw_uid or st.st_nlink != 1:
            raise Refused(
                2,
                f"~{pw.pw_name}/{PGPASS} is not {pw.pw_name}'s own regular file: the platform "
                "leaves it alone; move it away for the platform to keep your database password there",
            )
        return f.read(MAX_PGPASS).decode(errors="replace"), st.st_mtime


def write_pgpass(home: int, pw: pwd.struct_passwd, text: str) -> None:
    tmp = f".pgpass.platform-{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=home)
    try:
        os.fchown(fd, pw.pw_uid, pw.pw_gid)
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.rename(tmp, PGPASS, src_dir_fd=home, dst_dir_fd=home)
    except OSError:
        os.unlink(tmp, dir_fd=home)
        raise


def with_password(text: str | None, key: str, password: str) -> str:
    """The user's lines kept as they are, the platform's line replaced (first: libpq takes the
    first line that matches)."""
    kept = [line for line in (text or "").splitlines() if not line.startswith(key)]
    return "\n".join([key + password, *kept]) + "\n"


def password_in(text: str | None, key: str) -> str | None:
    for line in (text or "").splitlines():
        if line.startswith(key):
            return line[len(key) :]
    return None


# ------------------------------------------------------------------------------ the database
def connect(cfg: dict, user: str, password: str):
    import psycopg2  # Debian's python3-psycopg2

    return psycopg2.connect(host=cfg["host"], port=cfg["port"], dbname=cfg["dbname"], user=user,
                            password=password, sslmode=cfg["sslmode"], sslrootcert=cfg.get("sslrootcert") or None,
                            connect_timeout=10, application_name="platform-analytics")  # fmt: skip


def works(cfg: dict, name: str, password: str) -> bool:
    import psycopg2

    try:
        connect(cfg, name, password).close()
        return True
    except psycopg2.OperationalError:
        return False


def sync(cfg: dict, name: str, provider_groups: list[str]) -> dict:
    if not re.fullmatch(cfg["username_pattern"], name):
        raise Refused(2, f"{name!r} is not a platform username: {cfg['username_rule']}")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise Refused(3, f"{name} has no account on this host (platform-account ensure {name} makes it)") from None
    groups = sorted(set(provider_groups) & set(cfg["groups"]))
    admin = cfg["admin_group"] in provider_groups
    key = pgpass_key(cfg, name)
    # The user's file first: its password decides whether a new one is set. A home or a file the
    # platform leaves alone never stops the rest: the memberships follow the provider whatever
    # the user put in their home (else a link there would keep a group they lost).
    home, text, old, keep, untouchable = None, None, None, False, None
    try:
        home = open_home(pw)
        text, mtime = read_pgpass(home, pw)
        old = password_in(text, key)
        fresh = old is not None and time.time() - mtime < cfg["credential_max_age_days"] * 86400
        keep = fresh and works(cfg, name, old)
    except Refused as e:
        untouchable = e
    password = None if keep or untouchable else secrets.token_hex(24)
    try:
        changed = sync_user(cfg, name, groups, admin, scram_verifier(password) if password else None)
        if password:
            try:
                write_pgpass(home, pw, with_password(text, key, password))
            except OSError as e:
                raise Refused(
                    2, f"~{name}/{PGPASS} could not be written ({e.strerror}); the next login tries again"
                ) from None
    finally:
        if home is not None:
            os.close(home)
    if untouchable:
        raise Refused(untouchable.code, f"{untouchable} (the memberships were kept in step: {changed})")
    return {"user": name, "changed": [c for c in changed if c != "password"],
            "credentials": "kept" if keep else ("rotated" if old is not None else "new")}  # fmt: skip


def sync_user(cfg: dict, name: str, groups: list[str], admin: bool, verifier: str | None) -> list[str]:
    """analytics_platform.sync_user as the sync's role: what it changed."""
    import psycopg2

    try:
        conn = connect(cfg, cfg["user"], cfg["password"])
    except psycopg2.OperationalError as e:
        raise Refused(4, f"the analytics database is not reachable: {str(e).strip()}") from None
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT analytics_platform.sync_user(%s, %s, %s, %s)", (name, groups, admin, verifier))
            return cur.fetchone()[0]
    except psycopg2.Error as e:
        raise Refused(4, f"the analytics database refused {name}: {(e.pgerror or str(e)).strip()}") from None
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "sync":
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with open(CONFIG, encoding="utf-8") as f:
            cfg = json.load(f)
        print(json.dumps(sync(cfg, argv[1], argv[2:])))
        return 0
    except Refused as e:
        print(f"platform-analytics: {e}", file=sys.stderr)
        return e.code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
