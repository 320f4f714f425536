#!/usr/bin/python3
"""Before the databases are re-created from their dumps: the roles of the backup's
`pg_dumpall --globals-only` dump (argv[1]) that this server lacks, created as they were (their
attributes, password verifier and settings) with their memberships.

On a new host the users' own roles (the analytics database's, made at each user's login) do not
exist yet, and pg_restore stops at the first object a missing role owns or is granted. Roles the
server has are left as they are: the converge manages them. Prints the roles it created."""

import re
import subprocess
import sys

NAME = r'("(?:[^"]|"")+"|[^\s;"]+)'
PSQL = ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres"]


def unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def main(path: str) -> None:
    listed = subprocess.run([*PSQL, "-A", "-t", "-c", "SELECT rolname FROM pg_roles"], check=True,
                            capture_output=True, text=True)  # fmt: skip
    existing = set(listed.stdout.splitlines())
    statements, created = [], []
    with open(path) as dump:
        for line in dump:
            role = re.match(rf"(CREATE|ALTER) ROLE {NAME}", line)
            member = re.match(rf"GRANT {NAME} TO {NAME}", line)
            if role and unquote(role[2]) not in existing:
                statements.append(line)
                if role[1] == "CREATE":
                    created.append(unquote(role[2]))
            elif member and unquote(member[2]) not in existing:
                statements.append(line)
    if statements:
        subprocess.run(PSQL, input="".join(statements), check=True, text=True, stdout=subprocess.DEVNULL)
    print(" ".join(created))


if __name__ == "__main__":
    main(sys.argv[1])
