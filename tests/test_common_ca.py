"""The install's CA (the common role's tasks_from: ca), on the controller: created once, and never
re-created afterwards, whatever name a later caller passes (nginx and Keycloak both ensure it; a
re-created CA would break every client's trust and re-issue every certificate)."""

from __future__ import annotations

import yaml
from conftest import BIN, ROOT, run


def ensure_ca(tmp_path, name: str):
    pb = tmp_path / "ca.yml"
    pb.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [{
        "ansible.builtin.include_role": {"name": str(ROOT / "roles/common"), "tasks_from": "ca"},
        "vars": {"common_ca_dir": str(tmp_path / "ca"), "common_ca_export": str(tmp_path / "platform-ca.crt"),
                 "common_ca_common_name": name}}]}]))  # fmt: skip
    return run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(pb)])


def test_the_ca_is_created_once_and_then_left_alone(tmp_path):
    first = ensure_ca(tmp_path, "Data platform private CA")
    assert first.returncode == 0, first.stdout[-2000:]
    cert = (tmp_path / "ca/ca.crt").read_bytes()
    assert (tmp_path / "platform-ca.crt").read_bytes() == cert
    again = ensure_ca(tmp_path, "Another name")
    assert again.returncode == 0, again.stdout[-2000:]
    assert (tmp_path / "ca/ca.crt").read_bytes() == cert, "the CA was re-created"
    assert "changed=0" in again.stdout, again.stdout[-2000:]
