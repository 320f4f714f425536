"""The test-host harness itself: boot, reach, keep an --offline host off the network, clean up only
what it added, survive a crash."""

from __future__ import annotations

import contextlib
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
        # The tests' browser, in its namespace, reaches the --offline host: its replies pass.
        ns = run([*TH, "browser"]).stdout.strip()
        reach = run(["ip", "netns", "exec", ns, "sh", "-c", connect.format(hosts["h2"]["address"], 22)])
        assert reach.returncode == 0, f"the browser's namespace does not reach the offline host: {reach.stderr}"
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


def _slow_tls_server(address: str, cert_dir: Path) -> int:
    """A page whose TLS handshake waits 3 s: Chromium is connecting for that long, which is when
    a change of its namespace's network aborts the load (net::ERR_NETWORK_CHANGED)."""
    import ssl
    import threading

    key, cert = cert_dir / "key.pem", cert_dir / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=slow.test"], check=True, capture_output=True)  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server((address, 0))

    def serve(conn):
        with contextlib.suppress(OSError):
            time.sleep(3)
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(65536)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nok")

    def accept():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def _loads_while_this_machines_network_changes(executable: str, url: str) -> list[str]:
    """Three page loads, each while a veth pair is added to this machine and removed (as a
    scenario's machines come and go); what each load gave."""
    import threading

    from playwright.sync_api import Error, sync_playwright

    def churn():
        time.sleep(1)
        subprocess.run(["ip", "link", "add", "dpt-churn0", "type", "veth", "peer", "name", "dpt-churn1"], check=True)
        subprocess.run(["ip", "addr", "add", "10.212.254.1/30", "dev", "dpt-churn0"], check=True)
        for link in ("dpt-churn0", "dpt-churn1"):
            subprocess.run(["ip", "link", "set", link, "up"], check=True)
        time.sleep(0.5)
        subprocess.run(["ip", "link", "del", "dpt-churn0"], check=True)

    results = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox", "--ignore-certificate-errors"])
        page = browser.new_page()
        for i in range(3):
            changer = threading.Thread(target=churn)
            changer.start()
            try:
                page.goto(f"{url}?{i}", timeout=20000)
                results.append("loaded")
            except Error as e:
                results.append(str(e).split(" at ")[0])
            changer.join()
        browser.close()
    return results


@pytest.mark.molecule
def test_the_browser_in_its_namespace_loads_pages_while_this_machines_network_changes(tmp_path):
    """molecule/tests/browser.py runs Chromium in `testhost.py browser`'s namespace: there a page
    load goes through while interfaces come and go on this machine. Chromium run beside them, as
    before, aborts the same loads."""
    sys.path.insert(0, str(ROOT / "molecule/tests"))
    from browser import in_browser_namespace

    launcher = in_browser_namespace("/usr/bin/chromium")
    ours = str(next(testhost.BROWSER_NET.hosts()))  # this machine's end: reached from both sides
    url = f"https://{ours}:{_slow_tls_server(ours, tmp_path)}/"
    try:
        assert _loads_while_this_machines_network_changes(launcher, url) == ["loaded"] * 3
        beside = _loads_while_this_machines_network_changes("/usr/bin/chromium", url)
        assert beside == ["Page.goto: net::ERR_NETWORK_CHANGED"] * 3, f"the changes did not reach Chromium: {beside}"
    finally:
        subprocess.run(["ip", "link", "del", "dpt-churn0"], check=False, capture_output=True)
        testhost.release_browser_net()
