"""Fixtures of the platform's tests, whatever the topology: which services keep a database and on
which hosts they run (stated from the inventory's groups), the database server as each service
host reaches it (loopback on its own host, its address from another), and logins to it made on
the service's own hosts with the service's password from the secrets directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import testinfra
from platform_db import SERVICES, ServiceHost, hosts_of


@pytest.fixture(scope="session")
def db_server(group_hosts):
    """The PostgreSQL host (root over SSH)."""
    return group_hosts("postgresql")[0]


@pytest.fixture(scope="session")
def db_server_name(db_server) -> str:
    """Its inventory name."""
    return db_server.backend.get_hostname()


@pytest.fixture(scope="session")
def databases(inventory, hostvars, db_server_name) -> list[str]:
    """The services with a database here: those with hosts in the inventory, Keycloak only with
    identity_provider: keycloak (the default)."""
    provider = hostvars[db_server_name].get("identity_provider", "keycloak")
    return [s for s in SERVICES if hosts_of(inventory, s) and (s != "keycloak" or provider == "keycloak")]


@pytest.fixture(scope="session")
def remote_clients(inventory, databases, db_server_name) -> list[str]:
    """The service hosts other than the database's own."""
    return sorted({h for s in databases for h in hosts_of(inventory, s)} - {db_server_name})


@pytest.fixture(scope="session")
def service_hosts(inventory, inventory_path, hostvars, databases, db_server_name, secrets_dir):
    """service_hosts("exec_api") -> the service's hosts, each able to log in as the service;
    skips when the service keeps no database in this scenario."""
    made: dict[str, list[ServiceHost]] = {}

    def get(service: str) -> list[ServiceHost]:
        if service not in databases:
            pytest.skip(f"{service} keeps no database in this scenario")
        if service not in made:
            secret = Path(secrets_dir) / f"postgresql_{service}_password"
            assert secret.is_file(), f"{service}'s database password is not at {secret}"
            made[service] = []
            for name in hosts_of(inventory, service):
                host = testinfra.get_host(f"ansible://{name}", ansible_inventory=str(inventory_path))
                dest = f"/root/.platform-tests-{service}-password"
                host.ansible("copy", f"src={secret} dest={dest} owner=root group=root mode=0600", check=False)
                remote = name != db_server_name
                server = hostvars[db_server_name]["ansible_host"] if remote else "127.0.0.1"
                made[service].append(ServiceHost(service, name, host, server, remote, dest))
        return made[service]

    yield get
    for hosts in made.values():
        for h in hosts:
            h.host.run("rm -f %s", h.password_file)
