"""The one secrets mechanism: lookup('platform_secret', NAME)."""

from __future__ import annotations

import stat
from pathlib import Path

import yaml
from conftest import BIN, ROOT, run


def lookup(tmp_path: Path, expr: str, extra_vars: dict | None = None):
    pb = tmp_path / "pb.yml"
    pb.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"ansible.builtin.copy": {"content": "{{ " + expr + " }}", "dest": str(tmp_path / "out"),
                                            "mode": "0600"}}],
    }]))  # fmt: skip
    inv = tmp_path / "inv" / "hosts.yml"
    inv.parent.mkdir(exist_ok=True)
    inv.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    args = [str(BIN / "ansible-playbook"), "-i", str(inv), str(pb)]
    if extra_vars:
        (tmp_path / "extra.yml").write_text(yaml.safe_dump(extra_vars))
        args += ["-e", f"@{tmp_path / 'extra.yml'}"]
    out = run(args, env={"ANSIBLE_LOOKUP_PLUGINS": str(ROOT / "lookup_plugins")})
    value = (tmp_path / "out").read_text() if (tmp_path / "out").exists() else None
    return out, value


def test_generated_once_kept_private_and_reused(tmp_path):
    out, first = lookup(tmp_path, "lookup('platform_secret', 'postgresql_x_password')")
    assert out.returncode == 0, out.stdout
    secret_dir = tmp_path / "inv" / ".secrets"
    f = secret_dir / "postgresql_x_password"
    assert f.read_text().strip() == first and len(first) == 40 and first.isalnum()
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret_dir.stat().st_mode) == 0o700
    (tmp_path / "out").unlink()
    _, second = lookup(tmp_path, "lookup('platform_secret', 'postgresql_x_password')")
    assert second == first
    assert first not in out.stdout + out.stderr


def test_vault_value_wins_and_nothing_is_generated(tmp_path):
    out, value = lookup(tmp_path, "lookup('platform_secret', 'superset_secret_key')",
                        {"platform_secrets": {"superset_secret_key": "from-the-operators-vault"}})  # fmt: skip
    assert out.returncode == 0, out.stdout
    assert value == "from-the-operators-vault"
    assert not (tmp_path / "inv" / ".secrets" / "superset_secret_key").exists()


def test_hex_kind_and_length(tmp_path):
    out, value = lookup(tmp_path, "lookup('platform_secret', 'hub_crypt_key', kind='hex', length=64)")
    assert out.returncode == 0, out.stdout
    assert len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def test_bad_name_and_empty_file_are_explained(tmp_path):
    out, _ = lookup(tmp_path, "lookup('platform_secret', '../etc/passwd')")
    assert out.returncode != 0 and "is not a valid secret name" in out.stdout
    d = tmp_path / "inv" / ".secrets"
    d.mkdir(parents=True, exist_ok=True)
    (d / "emptied").write_text("\n")
    out, _ = lookup(tmp_path, "lookup('platform_secret', 'emptied')")
    assert out.returncode != 0 and "is empty: delete it to generate a new value" in out.stdout


def test_secrets_are_never_read_as_inventory(tmp_path, local_inventory):
    """The directory is a dot directory: an inventory given as a directory skips it."""
    secrets = local_inventory.parent / ".secrets"
    secrets.mkdir()
    (secrets / "postgresql_a_password").write_text("NotAHostName123456\n")
    out = run([str(BIN / "ansible-inventory"), "-i", str(local_inventory.parent), "--list"])
    assert out.returncode == 0, out.stderr
    assert "NotAHostName123456" not in out.stdout


def _lookup_in_a_fork(plugin, directory: str, start, queue) -> None:
    module = plugin.LookupModule()
    start.wait()
    try:
        queue.put(module._one("raced", {}, {"inventory_dir": directory}, "password", 40))
    except Exception as e:  # reported to the test
        queue.put(f"error: {e}")


def test_hosts_generating_one_secret_at_once_get_the_same_value(tmp_path):
    """Ansible's forks look the same secret up for several hosts at once on a first run: none
    may read the file before its value is in it."""
    import importlib.util
    import multiprocessing

    spec = importlib.util.spec_from_file_location("platform_secret", ROOT / "lookup_plugins/platform_secret.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    ctx = multiprocessing.get_context("fork")
    for attempt in range(5):
        directory, queue, start = tmp_path / str(attempt), ctx.Queue(), ctx.Barrier(12)
        procs = [ctx.Process(target=_lookup_in_a_fork, args=(plugin, str(directory), start, queue)) for _ in range(12)]
        for p in procs:
            p.start()
        values = [queue.get(timeout=60) for _ in procs]
        for p in procs:
            p.join()
        assert len(set(values)) == 1 and not values[0].startswith("error"), values
        assert (directory / ".secrets/raced").read_text().strip() == values[0]
        assert [f.name for f in (directory / ".secrets").iterdir()] == ["raced"]  # no temporary file left
