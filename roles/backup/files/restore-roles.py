#!/usr/bin/python3
"""Before the databases are re-created from their dumps: the roles of the backup's
`pg_dumpall --globals-only` dump (argv[1]) that this server lacks, created as they were (their
attributes, password verifier and settings) with their memberships.

On a new host the users' own roles (the analytics database's, made at each user's login) do not
exist yet, and pg_restore stops at the first object a missing role owns or is granted. Roles the
server has are left as they are: the converge manages them. Prints the roles it created.

The dump is split into whole statements (quoted literals and identifiers kept whole: a user may
set a default of their own role to any text, newlines included), and a statement is replayed only
when it is about a missing role: `CREATE ROLE x`, `ALTER ROLE x ...`, `GRANT x TO y ...` or
`GRANT y TO x ...`."""

import re
import subprocess
import sys

NAME = r'("(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)'
PSQL = ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres"]


def statements(sql: str) -> list[str]:
    """The dump's statements, each whole: `;` ends one only outside '...' and "..." (doubled quotes
    inside them are the quote itself) and outside -- comments."""
    out, start, i, n = [], 0, 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            i += 1
            while i < n and not (sql[i] == c and sql[i + 1 : i + 2] != c):
                i += 2 if sql[i] == c else 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            if i == start or not sql[start:i].strip():
                start = n if end < 0 else end + 1
            i = n if end < 0 else end
        elif c == ";":
            out.append(sql[start : i + 1].strip())
            start = i + 1
        i += 1
    return out


def unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def about(statement: str) -> list[str]:
    """The roles a role statement is about: NAME of CREATE/ALTER ROLE NAME; both of GRANT A TO B."""
    role = re.fullmatch(rf"(?:CREATE|ALTER) ROLE {NAME}(?:\s.*)?;", statement, re.S)
    if role:
        return [unquote(role[1])]
    grant = re.fullmatch(rf"GRANT {NAME} TO {NAME}(?:\s(?:[^'\"]|{NAME})*)?;", statement, re.S)
    return [unquote(grant[1]), unquote(grant[2])] if grant else []


def main(path: str) -> None:
    listed = subprocess.run([*PSQL, "-A", "-t", "-c", "SELECT rolname FROM pg_roles"], check=True,
                            capture_output=True, text=True)  # fmt: skip
    existing = set(listed.stdout.splitlines())
    with open(path) as dump:
        wanted = [s for s in statements(dump.read()) if set(about(s)) - existing]
    if wanted:
        subprocess.run(PSQL, input="\n".join(wanted) + "\n", check=True, text=True, stdout=subprocess.DEVNULL)
    print(" ".join(about(s)[0] for s in wanted if s.startswith("CREATE ROLE")))


if __name__ == "__main__":
    main(sys.argv[1])
