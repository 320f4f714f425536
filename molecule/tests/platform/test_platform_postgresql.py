"""The PostgreSQL server as the postgresql role leaves it: who may connect from where and how
(pg_hba), what it stores for passwords, where it listens. Read on the database host as postgres
over the local socket."""

from __future__ import annotations

import json

from platform_db import READER, hosts_of

PORT_SUFFIX = ":5432"


def query(db_server, sql: str) -> list[dict]:
    """The rows of a query, as postgres over the local socket."""
    out = db_server.check_output("runuser -u postgres -- psql -XAtq -d postgres -c %s",
                                 f"SELECT coalesce(json_agg(t), '[]') FROM ({sql}) t")  # fmt: skip
    return json.loads(out)


def hba_rules(db_server) -> list[dict]:
    return query(db_server, "SELECT type, database, user_name, address, netmask, auth_method FROM pg_hba_file_rules")


def test_no_pg_hba_rule_trusts_or_takes_a_weak_password(db_server):
    weak = [r for r in hba_rules(db_server) if r["auth_method"] in ("trust", "md5", "password", "ident")]
    assert not weak, f"pg_hba rules without SCRAM or peer: {weak}"


def analytics_on(inventory) -> bool:
    """The analytics database is there when the inventory has JupyterHub (roles/analytics)."""
    return bool(hosts_of(inventory, "jupyterhub"))


def test_only_postgres_logs_in_over_the_local_socket_and_the_analytics_sync(db_server, db_server_name, inventory):
    """And, where the hub runs on the database server, the analytics database's sync (and its check
    of a user's password) over the socket, with SCRAM."""
    local = [r for r in hba_rules(db_server) if r["type"] == "local"]
    expected = [(["postgres"], "peer")]
    if analytics_on(inventory) and db_server_name in hosts_of(inventory, "jupyterhub"):
        expected += [(["analytics.sync"], "scram-sha-256"), (["+analytics.users"], "scram-sha-256")]
    assert [(r["user_name"], r["auth_method"]) for r in local] == expected, f"local rules: {local}"
    assert all(r["database"] in (["all"], ["analytics"]) for r in local), f"local rules: {local}"


def test_no_network_rule_opens_every_database(db_server):
    wide = [r for r in hba_rules(db_server) if r["type"] != "local" and "all" in r["database"]]
    assert not wide, f"network rules for all databases: {wide}"


def test_every_network_rule_takes_scram(db_server):
    methods = {r["auth_method"] for r in hba_rules(db_server) if r["type"] != "local"}
    assert methods == {"scram-sha-256"}, f"network rules' methods: {methods}"


def test_each_service_is_admitted_only_from_its_own_hosts(db_server, db_server_name, databases, inventory, hostvars):
    """One rule per service and host (loopback for the database's own host, TLS from another),
    Superset's reader on the exec API's database from Superset's hosts, and the analytics
    database's roles from the hosts of users' code, the hub and Superset."""

    def rules_for(db: str, user: str, group: str) -> set[tuple]:
        out = set()
        for h in hosts_of(inventory, group):
            if h == db_server_name:
                out |= {("host", db, user, "127.0.0.1"), ("host", db, user, "::1")}
            else:
                out.add(("hostssl", db, user, hostvars[h]["ansible_host"]))
        return out

    def ipv4(rules: set[tuple]) -> set[tuple]:
        return {r for r in rules if r[3] != "::1"}

    expected = set().union(*(rules_for(s, s, s) for s in databases))
    if {"exec_api", "superset"} <= set(databases):
        expected |= ipv4(rules_for("exec_api", READER, "superset"))
    if analytics_on(inventory):
        expected |= ipv4(rules_for("analytics", "+analytics.users", "jupyterhub")
                         | rules_for("analytics", "+analytics.users", "exec_api")
                         | rules_for("analytics", "+analytics.superset", "superset"))  # fmt: skip
        expected |= {r for r in rules_for("analytics", "analytics.sync", "jupyterhub") if r[0] == "hostssl"}
    found = {(r["type"], *r["database"], *r["user_name"], r["address"]) for r in hba_rules(db_server)
             if r["type"] != "local"}  # fmt: skip
    assert found == expected, f"missing {sorted(expected - found)}, unexpected {sorted(found - expected)}"


def test_only_scram_verifiers_are_stored(db_server):
    stored = query(
        db_server, "SELECT rolname, left(rolpassword, 14) AS kind FROM pg_authid WHERE rolpassword IS NOT NULL"
    )
    weak = [r["rolname"] for r in stored if r["kind"] != "SCRAM-SHA-256$"]
    assert not weak, f"roles with a password that is not a SCRAM-SHA-256 verifier: {weak}"


def test_a_password_for_each_service_role_and_superset_reader_only(db_server, databases, inventory, platform_vars):
    """Besides the services' roles and Superset's reader: the analytics database's sync and one
    Superset connection per group. Users' own analytics roles (members of analytics.users, made at
    their first login) are the analytics tests' concern."""
    stored = sorted(r["rolname"] for r in query(db_server, (
        "SELECT rolname FROM pg_authid a WHERE rolpassword IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_auth_members m "
        "JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = a.oid AND g.rolname = 'analytics.users')")))  # fmt: skip
    readers = [READER] if {"exec_api", "superset"} <= set(databases) else []
    analytics = []
    if analytics_on(inventory):
        analytics = ["analytics.sync"]
        if hosts_of(inventory, "superset"):
            analytics += [f"superset.{g}" for g in platform_vars.get("platform_analytics_groups", [])]
    assert stored == sorted(databases + readers + analytics), f"roles with a password: {stored}"


def test_postgresql_listens_where_its_clients_are_only(db_server, db_server_name, hostvars, remote_clients):
    """Loopback always; the host's own address too when a service runs on another host."""
    listening = {s.split("://", 1)[1].removesuffix(PORT_SUFFIX).strip("[]")
                 for s in db_server.socket.get_listening_sockets() if s.endswith(PORT_SUFFIX)}  # fmt: skip
    expected = {"127.0.0.1", "::1"} | ({hostvars[db_server_name]["ansible_host"]} if remote_clients else set())
    assert listening == expected, f"PostgreSQL listens on {sorted(listening)} (remote clients: {remote_clients})"
