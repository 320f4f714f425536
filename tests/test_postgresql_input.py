"""Bad input to the postgresql role fails early, naming the variable and the fix."""

from __future__ import annotations

import pytest
import yaml
from conftest import BIN, ROOT, run

GOOD = {"name": "svc", "owner": "svc", "password": "a-long-enough-password", "clients": ["127.0.0.1/32"]}


def apply_role(tmp_path, **role_vars):
    pb = tmp_path / "pb.yml"
    pb.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "roles": [{"role": str(ROOT / "roles/postgresql"), "vars": role_vars}],
    }]))  # fmt: skip
    # Only input checks run: argument validation is tagged always, the asserts postgresql_assert.
    return run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(pb),
                "--tags", "postgresql_assert"])  # fmt: skip


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
