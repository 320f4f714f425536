"""Each service's access to PostgreSQL, tried from the service's own hosts with its own password:
its database, over TLS from another host; nobody else's database; not with a wrong password;
not without TLS from another host."""

from __future__ import annotations

import pytest
from platform_db import SERVICES

# Refusals must come from authentication, not from a broken connection.
REFUSED = ("no pg_hba.conf entry", "password authentication failed")

pytestmark = pytest.mark.parametrize("service", SERVICES)


def test_service_logs_in_to_its_own_database_and_creates_tables(service, service_hosts):
    """Over TCP with its password; the owner can create its schema (what migrations do)."""
    sql = ("CREATE TABLE platform_tests_probe (id int); DROP TABLE platform_tests_probe; "
           "SELECT current_user AS who, current_database() AS db, "
           "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS tls")  # fmt: skip
    for h in service_hosts(service):
        got = h.login(service, sql)
        assert got.row, f"{service} on {h.name} was refused its own database at {h.server}: {got.refused}"
        assert (got.row["who"], got.row["db"]) == (service, service), f"{service} on {h.name} got in as {got.row}"
        assert got.row["tls"] or not h.remote, f"{service} on {h.name} reached {h.server} without TLS: {got.row}"


def test_service_is_refused_on_every_other_database(service, service_hosts, databases):
    others = [db for db in [*databases, "postgres"] if db != service]
    for h in service_hosts(service):
        tried = {db: h.login(db) for db in others}
        let_in = [db for db, got in tried.items() if got.row is not None]
        assert not let_in, f"{service} on {h.name} logged in to {let_in}"
        odd = {db: got.refused for db, got in tried.items() if not any(r in got.refused for r in REFUSED)}
        assert not odd, f"{service} on {h.name} was turned away for another reason: {odd}"


def test_service_is_refused_with_a_wrong_password(service, service_hosts):
    for h in service_hosts(service):
        got = h.login(service, wrong=True)
        assert got.refused and "password authentication failed" in got.refused, (
            f"{service} on {h.name} with a wrong password: {got}"
        )


def test_service_is_refused_without_tls_from_another_host(service, service_hosts):
    hosts = [h for h in service_hosts(service) if h.remote]
    if not hosts:
        pytest.skip(f"{service} runs on the database's host: it connects over loopback")
    for h in hosts:
        got = h.login(service, sslmode="disable")
        assert got.refused and "no pg_hba.conf entry" in got.refused, f"{service} on {h.name} without TLS: {got}"
