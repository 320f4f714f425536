"""Bad input to the postgresql role fails early, naming the variable and the fix."""

from __future__ import annotations

import pytest
import yaml
from conftest import BIN, ROOT, run

GOOD = {"name": "svc", "owner": "svc", "password": "a-long-enough-password", "clients": ["127.0.0.1/32"]}


def apply_role(tmp_path, *extra, **role_vars):
    # Without facts the role cannot tell the Debian release: name the version it would pick on 12.
    role_vars.setdefault("postgresql_version", "15")
    pb = tmp_path / "pb.yml"
    pb.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "roles": [{"role": str(ROOT / "roles/postgresql"), "vars": role_vars}],
    }]))  # fmt: skip
    # Only input checks run: argument validation is tagged always, the asserts postgresql_assert.
    return run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(pb),
                "--tags", "postgresql_assert", *extra])  # fmt: skip


def test_valid_input_passes(tmp_path):
    local = {"type": "local", "database": "a", "user": "a", "method": "scram-sha-256"}  # the socket: no address
    out = apply_role(tmp_path, postgresql_databases=[GOOD], postgresql_hba_entries=[local])
    assert out.returncode == 0, out.stdout[-2000:]


@pytest.mark.parametrize(
    ("databases", "hba", "expect"),
    [
        ([{**GOOD, "owner": None}], [], "postgresql_databases[0] (name=svc) is invalid"),
        ([{k: v for k, v in GOOD.items() if k != "owner"}], [], "owner"),
        ([{**GOOD, "password": "short"}], [], "12 characters or more"),
        ([{**GOOD, "clients": ["everyone"]}], [], "a list of CIDR addresses"),
        ([GOOD, {**GOOD, "name": "other"}], [], "each service needs its own database and its own owner"),
        ([], [{"type": "host", "database": "a", "user": "a", "address": "10.0.0.0/8", "method": "md5"}], "method"),
        ([], [{"type": "host", "database": "a", "user": "a", "address": "10.0.0.0/8", "method": "trust"}], "method"),
        (
            [],
            [{"type": "local", "database": "a", "user": "a", "address": "10.0.0.0/8", "method": "reject"}],
            "none for local",
        ),
        ([], [{"type": "socket", "database": "a", "user": "a", "method": "reject"}], "type"),
    ],
)
def test_bad_input_is_refused_with_the_variable_named(tmp_path, databases, hba, expect):
    out = apply_role(tmp_path, postgresql_databases=databases, postgresql_hba_entries=hba)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "postgresql_databases" in text or "postgresql_hba_entries" in text, text[-2000:]
    assert expect in text, text[-2000:]
    assert "a-long-enough-password" not in text
    assert "censored" not in text  # the message is shown, never hidden behind no_log


def test_remote_clients_need_a_private_address(tmp_path):
    out = apply_role(tmp_path, postgresql_databases=[{**GOOD, "clients": ["10.1.2.3/32"]}])
    assert out.returncode != 0
    assert "postgresql_private_address is empty" in out.stdout


def test_an_unknown_debian_release_needs_the_version_named(tmp_path):
    # No facts: the release is unknown, so the default version is empty.
    out = apply_role(tmp_path, postgresql_version="{{ __postgresql_release_version }}")
    assert out.returncode != 0
    assert 'postgresql_version is "": set it to a major version' in out.stdout, out.stdout[-2000:]


def test_a_cluster_of_another_major_version_stops_the_role_with_the_upgrade_steps(tmp_path):
    # A host upgraded from Debian 12 to 13 keeps its 15/main; the role would make an empty 17/main.
    conf = tmp_path / "etc-postgresql"
    (conf / "15/main").mkdir(parents=True)
    (conf / "17/main").mkdir(parents=True)
    (conf / "15/other").mkdir(parents=True)  # another cluster name is not this role's
    out = apply_role(tmp_path, "-e", f"__postgresql_conf_root={conf}", postgresql_version="17")
    assert out.returncode != 0
    text = " ".join(out.stdout.split())
    assert "has a PostgreSQL 15 cluster `main`, and postgresql_version is 17" in text, text[-2000:]
    assert 'set postgresql_version: "15"' in text
    assert "pg_dropcluster --stop 17 main" in text and "pg_upgradecluster 15 main" in text

    (conf / "15/main").rmdir()
    out = apply_role(tmp_path, "-e", f"__postgresql_conf_root={conf}", postgresql_version="17")
    assert out.returncode == 0, out.stdout[-2000:]
