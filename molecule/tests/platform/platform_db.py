"""The platform's databases as the tests state them, and a login to PostgreSQL made on a
service's own host as that service."""

from __future__ import annotations

import json
from dataclasses import dataclass

# The services that keep their state in PostgreSQL (each role's README), one database and one
# login role each, named after the service; Keycloak only as the platform's own provider.
SERVICES = ("keycloak", "exec_api", "jupyterhub", "superset")
# Superset's read-only role on the exec API's database (roles/superset, its executions dashboard).
READER = "superset_reader"
PORT = 5432

# Runs on a service host with the system's python3-psycopg2 (the common role installs it). The
# password comes from a root-only file, never from a command line; the answer is one JSON line.
PROBE = r"""
import json, sys
import psycopg2
server, port, user, db, password_file, sslmode, suffix, sql = sys.argv[1:]
with open(password_file) as f:
    password = f.read().strip() + suffix
try:
    conn = psycopg2.connect(host=server, port=port, user=user, dbname=db, password=password,
                            sslmode=sslmode, connect_timeout=10)
except psycopg2.OperationalError as e:
    print(json.dumps({"refused": str(e).strip()}))
    sys.exit(0)
conn.autocommit = True
with conn.cursor() as cur:
    cur.execute(sql)
    row = dict(zip([d.name for d in cur.description], cur.fetchone()))
conn.close()
print(json.dumps({"row": row}, default=str))
"""


def hosts_of(inventory: dict, group: str) -> list[str]:
    return inventory.get(group, {}).get("hosts", [])


@dataclass
class Login:
    """What a login as `user` to `db` got: the query's row, or the server's refusal."""

    user: str
    db: str
    row: dict | None = None
    refused: str | None = None


@dataclass
class ServiceHost:
    """A host of a service, logging in to the database server as that service."""

    service: str
    name: str  # its inventory name
    host: object  # testinfra host
    server: str  # the database server's address as this host reaches it
    remote: bool
    password_file: str  # on the host, root-only

    def login(self, db: str, sql: str = "SELECT 1 AS one", *, sslmode: str = "prefer", wrong: bool = False) -> Login:
        args = [
            PROBE,
            self.server,
            str(PORT),
            self.service,
            db,
            self.password_file,
            sslmode,
            "-wrong" if wrong else "",
            sql,
        ]
        out = self.host.run("python3 -c" + " %s" * len(args), *args)
        assert out.rc == 0 and out.stdout.strip(), f"the login probe on {self.name}: rc {out.rc} {out.stderr[-800:]}"
        return Login(self.service, db, **json.loads(out.stdout.strip().splitlines()[-1]))
