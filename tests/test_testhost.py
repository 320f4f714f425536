"""The test-host harness itself: boot, reach, keep an --offline host off the network, clean up only
what it added, survive a crash."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from conftest import ROOT, run

sys.path.insert(0, str(ROOT / "tools"))
import testhost

TH = [sys.executable, str(ROOT / "tools/testhost.py")]


def test_host_specs_are_validated():
    assert testhost.parse_host("db1") == ("db1", [], "bookworm")
    assert testhost.parse_host("app1=hub.example.test,api.example.test") == (
        "app1", ["hub.example.test", "api.example.test"], "bookworm")  # fmt: skip
    assert testhost.parse_host("site1@trixie=api.example.test") == ("site1", ["api.example.test"], "trixie")
    for bad in ("Bad_Name", "db1@sid", "db1@"):
        with pytest.raises(SystemExit):
            testhost.parse_host(bad)
    # --offline names a host of the scenario, or nothing is started.
    with pytest.raises(SystemExit):
        testhost.up("harness-specs", ["db1"], offline=["db2"])
    assert testhost.load_state("harness-specs") is None


def test_recipe_key_changes_with_the_recipe_and_the_release(monkeypatch):
    key = testhost.recipe_key()
    assert testhost.recipe_key("trixie") != key
    monkeypatch.setattr(testhost, "INCLUDE", [*testhost.INCLUDE, "curl"])
    assert testhost.recipe_key() != key


def nat_rules() -> str:
    return subprocess.run(["iptables", "-t", "nat", "-S", "POSTROUTING"], capture_output=True, text=True).stdout


def forward_rules() -> str:
    return subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout


@pytest.mark.molecule
def test_up_recovers_from_a_crashed_run_and_down_removes_only_its_own(tmp_path):
    scenario = "harness-selftest"
    foreign_rule = ["POSTROUTING", "-s", "10.254.254.0/24", "-j", "RETURN", "-m", "comment", "--comment", "not-ours"]
    try:
        subprocess.run(["iptables", "-t", "nat", "-A", *foreign_rule], check=True)
        subprocess.run(["ip", "link", "add", "notours0", "type", "bridge"], check=True)
        first = run([*TH, "up", scenario, "h1"], timeout=600)
        assert first.returncode == 0, first.stderr
        state1 = json.loads(run([*TH, "status", scenario]).stdout)
        pid1 = state1["machines"]["h1"]["pid"]
        # A second `up` without `down` is what follows a crashed run: it must stop the old machine.
        second = run([*TH, "up", scenario, "h1", "h2", "--offline", "h2"], timeout=600)
        assert second.returncode == 0, second.stderr
        assert not Path(f"/proc/{pid1}").exists() or not testhost.is_our_nspawn(
            pid1, state1["machines"]["h1"]["machine"]
        )
        hosts = {h["name"]: h for h in json.loads(second.stdout)}
        key = hosts["h1"]["identity_file"]
        # Every host resolves and reaches the others by name; each has its own hostname.
        probe = testhost.ssh_ok(Path(key), hosts["h1"]["address"], "hostname; getent hosts h2")
        assert probe.stdout.split()[0] == "h1" and hosts["h2"]["address"] in probe.stdout
        # h1 reaches the package mirror through NAT; h2, --offline, reaches h1 and nothing further.
        mirror = socket.getaddrinfo(urllib.parse.urlsplit(testhost.debian_mirror()).hostname, 80, socket.AF_INET)
        connect = "timeout 10 bash -c 'exec 3<>/dev/tcp/{}/{}'"
        assert testhost.ssh_ok(Path(key), hosts["h1"]["address"], connect.format(mirror[0][4][0], 80)).returncode == 0
        h2 = {addr: testhost.ssh_ok(Path(key), hosts["h2"]["address"], connect.format(addr, port)).returncode
              for addr, port in ((mirror[0][4][0], 80), (hosts["h1"]["address"], 22))}  # fmt: skip
        assert h2 == {mirror[0][4][0]: 1, hosts["h1"]["address"]: 0}, h2
        state2 = json.loads(run([*TH, "status", scenario]).stdout)
        assert testhost.NAT_COMMENT_PREFIX + scenario in nat_rules()
        assert testhost.NAT_COMMENT_PREFIX + scenario in forward_rules()
        down = run([*TH, "down", scenario])
        assert down.returncode == 0, down.stderr
        for m in state2["machines"].values():
            assert not testhost.is_our_nspawn(m["pid"], m["machine"])
            assert not Path(m["dir"]).exists()
        # The machines' trees, put aside, are removed in the background.
        deadline = time.monotonic() + 120
        while list((testhost.STATE / "trash").glob(f"{scenario}-*")) and time.monotonic() < deadline:
            time.sleep(1)
        assert not list((testhost.STATE / "trash").glob(f"{scenario}-*")), "the machines' trees were not removed"
        assert testhost.NAT_COMMENT_PREFIX + scenario not in nat_rules()
        assert testhost.NAT_COMMENT_PREFIX + scenario not in forward_rules()
        assert run(["ip", "link", "show", state2["bridge"]]).returncode != 0
        # What it did not add is still there.
        assert "not-ours" in nat_rules()
        assert run(["ip", "link", "show", "notours0"]).returncode == 0
    finally:
        run([*TH, "down", scenario])
        subprocess.run(["iptables", "-t", "nat", "-D", *foreign_rule], check=False)
        subprocess.run(["ip", "link", "del", "notours0"], check=False)
