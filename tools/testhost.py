#!/usr/bin/env python3
"""Throw-away Debian 12 or 13 test hosts: systemd-nspawn machines booted from a cached debootstrap
root, one per Debian release.

The development and CI machines have no systemd as PID 1 and no container engine, but
systemd-nspawn can boot a real systemd userland (see ../shared/TESTHOSTS.md). This script is the
one mechanism behind molecule's create/destroy playbooks and the README's demo command.

    testhost.py root [--suite SUITE]         build (or reuse) the cached pristine root, print its path
    testhost.py up SCENARIO HOST[@SUITE][=ALIAS,...] ... [--offline HOST]...   boot hosts (after
                                             cleaning leftovers of SCENARIO); SUITE bookworm (the
                                             default) or trixie; an --offline host reaches nothing
                                             beyond the scenario's bridge (no registry, no DNS)
    testhost.py down SCENARIO                stop what `up SCENARIO` started, remove what it added
    testhost.py status [SCENARIO]            print the recorded state as JSON
    testhost.py browser                      make (or reuse) the tests' browser's network namespace,
                                             print its name (`ip netns exec NAME chromium ...`)

Every host of a scenario sits on one bridge with its own address, resolves every other host
(and its aliases) by name through /etc/hosts, reaches the package registries through NAT (unless
it is --offline: then what it sends past the bridge is refused at once), and accepts SSH as root
with a per-scenario key. `up` prints the hosts as JSON on stdout.

The tests' browser runs in a network namespace of its own, which reaches every scenario's
hosts through a routed veth, masqueraded to this machine's bridge address (the hosts see it as
they would see this machine): Chromium aborts a page load that is connecting with
ERR_NETWORK_CHANGED whenever an address or link of its namespace changes, and here every
scenario's bridge and veths come and go while another scenario's browser logs in. The last `down`
removes it.

Only what this script records is ever stopped or removed: machines by their recorded PID
(checked against /proc/PID/cmdline), the bridge it created, the browser's namespace and veth,
and NAT and offline rules carrying its comment.
Environment: TESTHOST_CACHE (default /var/cache/dataplatform-testhosts),
TESTHOST_STATE (default /var/lib/dataplatform-testhosts), TESTHOST_MIRROR (Debian mirror URL;
default: the first one this machine's apt sources use).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

# Debian releases a test host can run: 12 (the default) and 13.
SUITES = ("bookworm", "trixie")
DEFAULT_SUITE = "bookworm"
INCLUDE = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "openssh-server",
    "iproute2",
    "sudo",
    "ca-certificates",
]
# Bump when the customisation below changes: the root's cache key includes it.
RECIPE_REVISION = "3"
CACHE = Path(os.environ.get("TESTHOST_CACHE", "/var/cache/dataplatform-testhosts"))
STATE = Path(os.environ.get("TESTHOST_STATE", "/var/lib/dataplatform-testhosts"))
NAT_COMMENT_PREFIX = "dataplatform-testhost:"
# Test subnets are taken from this range, one /24 per scenario.
SUBNET_POOL = ipaddress.ip_network("10.213.0.0/16")
# The tests' browser's namespace (`testhost.py browser`): this machine's end of its veth and the
# browser's, outside SUBNET_POOL.
BROWSER_NS = "dataplatform-browser"
BROWSER_VETH = "dpt-browser"
BROWSER_NET = ipaddress.ip_network("10.212.255.252/30")
SSH_OPTS = [
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "ConnectTimeout=3",
    "-o", "BatchMode=yes",
]  # fmt: skip
BOOT_TIMEOUT = 180


def log(msg: str) -> None:
    print(f"[testhost] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, **kw)


def die(msg: str) -> None:
    log(f"error: {msg}")
    sys.exit(1)


# --------------------------------------------------------------------------- pristine root
def debian_mirror() -> str:
    if os.environ.get("TESTHOST_MIRROR"):
        return os.environ["TESTHOST_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for src in sources:
        if not src.is_file() or src.suffix not in {"", ".list", ".sources"}:
            continue
        text = src.read_text(errors="replace")
        for m in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M):
            url = m.group(1)
            if url.rstrip("/").endswith("/debian"):
                return url
    die("no Debian mirror found in this machine's apt sources: set TESTHOST_MIRROR")
    raise AssertionError


def recipe_key(suite: str = DEFAULT_SUITE) -> str:
    recipe = json.dumps([suite, INCLUDE, RECIPE_REVISION, "minbase"])
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def customise_root(root: Path) -> None:
    """One-time changes every test host shares."""
    # Each machine gets its own machine-id and SSH host keys at copy time.
    (root / "etc/machine-id").write_text("")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "systemd-networkd.service"
    if not link.exists():
        link.symlink_to("/lib/systemd/system/systemd-networkd.service")
    # Nothing in the test host waits for "network online" longer than needed.
    (root / "etc/systemd/system/systemd-networkd-wait-online.service").unlink(missing_ok=True)
    run(["chroot", str(root), "apt-get", "clean"])


@contextlib.contextmanager
def exclusive(directory: Path):
    """Hold DIRECTORY/.lock: scenarios may be brought up at the same time (tests/test_molecule.py)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def ensure_root(suite: str = DEFAULT_SUITE) -> Path:
    root = CACHE / f"root-{suite}-{recipe_key(suite)}"
    if (root / ".complete").exists():
        return root
    with exclusive(CACHE):  # one build; another `up` waits for it instead of removing it as stale
        return build_root(root, suite)


def build_root(root: Path, suite: str) -> Path:
    if (root / ".complete").exists():
        return root
    others = tuple(f"root-{s}-" for s in SUITES if s != suite)
    for stale in CACHE.glob("root-*"):  # this release's older recipes, half-built roots
        if stale != root and not stale.name.startswith(others):
            log(f"removing stale root {stale}")
            shutil.rmtree(stale, ignore_errors=True)
    tmp = CACHE / f"{root.name}.tmp{os.getpid()}"
    shutil.rmtree(root, ignore_errors=True)
    log(f"building pristine {suite} root (debootstrap, about a minute)")
    t0 = time.monotonic()
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(INCLUDE)}",
            suite,
            str(tmp),
            debian_mirror(),
        ],
        stdout=subprocess.DEVNULL,
    )
    customise_root(tmp)
    (tmp / ".complete").write_text(recipe_key(suite))
    tmp.rename(root)
    log(f"root ready in {time.monotonic() - t0:.0f} s: {root}")
    return root


# --------------------------------------------------------------------------- state
# Directories of STATE that are not scenarios' (the browser's lock, consoles, trees being removed).
RESERVED = ("browser", "logs", "trash")


def scenario_dir(scenario: str) -> Path:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", scenario):
        die(f"scenario name {scenario!r}: use lowercase letters, digits and '-' (max 31)")
    if scenario in RESERVED:
        die(f"scenario name {scenario!r}: reserved for the harness ({', '.join(RESERVED)}); pick another")
    return STATE / scenario


def load_state(scenario: str) -> dict | None:
    f = scenario_dir(scenario) / "state.json"
    return json.loads(f.read_text()) if f.exists() else None


def save_state(scenario: str, state: dict) -> None:
    f = scenario_dir(scenario) / "state.json"
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(f)


def short(scenario: str, what: str) -> str:
    return hashlib.sha1(f"{scenario}/{what}".encode()).hexdigest()[:6]


def pick_subnet(scenario: str) -> ipaddress.IPv4Network:
    used = {s["subnet"] for s in all_states() if s.get("scenario") != scenario}
    routes = run(["ip", "-4", "route", "show"], capture_output=True).stdout
    subnets = list(SUBNET_POOL.subnets(new_prefix=24))
    start = int(short(scenario, "subnet"), 16) % len(subnets)
    for i in range(len(subnets)):
        net = subnets[(start + i) % len(subnets)]
        if str(net) not in used and str(net.network_address) not in routes:
            return net
    die("no free test subnet left")
    raise AssertionError


def all_states() -> list[dict]:
    states = []
    for path in STATE.glob("*/state.json") if STATE.exists() else []:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):  # a scenario going down meanwhile
            states.append(json.loads(path.read_text()))
    return states


# --------------------------------------------------------------------------- up / down
def is_our_nspawn(pid: int, machine: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and argv[0].endswith(b"systemd-nspawn") and machine.encode() in argv


def offline_rule(addr: str, subnet: str, scenario: str) -> list[str]:
    """An --offline host's packets to anywhere but its scenario's subnet, refused on this machine
    (an ICMP error at once, so a client fails fast instead of waiting, and nothing leaves), but
    for its replies to what connected to it (the tests' browser, from its own namespace)."""
    return [
        "FORWARD", "-s", addr, "!", "-d", subnet, "-m", "conntrack", "!", "--ctstate", "ESTABLISHED,RELATED",
        "-j", "REJECT", "--reject-with", "icmp-net-unreachable", "-m", "comment", "--comment",
        NAT_COMMENT_PREFIX + scenario,
    ]  # fmt: skip


def nat_rule(subnet: str, scenario: str) -> list[str]:
    return [
        "POSTROUTING", "-s", subnet, "!", "-d", subnet, "-j", "MASQUERADE",
        "-m", "comment", "--comment", NAT_COMMENT_PREFIX + scenario,
    ]  # fmt: skip


def browser_rule() -> list[str]:
    return [
        "POSTROUTING", "-s", str(BROWSER_NET), "!", "-d", str(BROWSER_NET), "-j", "MASQUERADE",
        "-m", "comment", "--comment", NAT_COMMENT_PREFIX + "browser",
    ]  # fmt: skip


def browser_net() -> str:
    """The tests' browser's network namespace (module docstring), made once and kept while any
    scenario is up; its name. No IPv6 in it: a link-local address appearing after Chromium started
    would abort a page load like any other change."""
    ours, theirs = (str(a) for a in BROWSER_NET.hosts())
    with exclusive(STATE / "browser"):
        route = run(["ip", "-n", BROWSER_NS, "-4", "route", "show", "default"], check=False, capture_output=True)
        if f"via {ours}" not in route.stdout:
            remove_browser_net()
            taken = run(["ip", "-4", "route", "show", "match", ours], capture_output=True).stdout
            if any(line.split()[0] != "default" for line in taken.splitlines()):
                die(f"{BROWSER_NET} (the tests' browser's network) is routed on this machine already: {taken.strip()}")
            run(["ip", "netns", "add", BROWSER_NS])
            run(["ip", "netns", "exec", BROWSER_NS, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                 "net.ipv6.conf.default.disable_ipv6=1"])  # fmt: skip
            run(["ip", "link", "add", BROWSER_VETH, "type", "veth", "peer", "name", "eth0", "netns", BROWSER_NS])
            run(["ip", "addr", "add", f"{ours}/{BROWSER_NET.prefixlen}", "dev", BROWSER_VETH])
            run(["ip", "link", "set", BROWSER_VETH, "up"])
            run(["ip", "-n", BROWSER_NS, "addr", "add", f"{theirs}/{BROWSER_NET.prefixlen}", "dev", "eth0"])
            for link in ("lo", "eth0"):
                run(["ip", "-n", BROWSER_NS, "link", "set", link, "up"])
            run(["ip", "-n", BROWSER_NS, "route", "add", "default", "via", ours])
            log(f"the tests' browser's namespace {BROWSER_NS} ({theirs}, through {BROWSER_VETH})")
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        if run(["iptables", "-t", "nat", "-C", *browser_rule()], check=False, stderr=subprocess.DEVNULL).returncode:
            run(["iptables", "-t", "nat", "-A", *browser_rule()])
    return BROWSER_NS


def remove_browser_net() -> None:
    run(["ip", "netns", "del", BROWSER_NS], check=False, stderr=subprocess.DEVNULL)
    run(["ip", "link", "del", BROWSER_VETH], check=False, stderr=subprocess.DEVNULL)
    remove_rules("nat", "POSTROUTING", NAT_COMMENT_PREFIX + "browser")


def release_browser_net() -> None:
    """The browser's namespace removed when no scenario is left whose tests could use it."""
    with exclusive(STATE / "browser"):
        if not all_states():
            remove_browser_net()


def remove_rules(table: str, chain: str, comment: str) -> None:
    """Every rule of the chain that carries exactly this comment, whatever else it says (a rule an
    older version of this script added is found too)."""
    listing = run(["iptables", "-t", table, "-S", chain], capture_output=True).stdout
    for line in listing.splitlines():
        try:
            args = shlex.split(line)
        except ValueError:  # not a rule this script wrote
            continue
        if args[:1] == ["-A"] and "--comment" in args and args[args.index("--comment") + 1] == comment:
            run(["iptables", "-t", table, "-D", *args[1:]], check=False, stderr=subprocess.DEVNULL)


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def discard(scenario: str, tree: Path) -> None:
    """A halted machine's tree (a few GiB, ~10^5 files) moved aside at once and removed by a
    process of its own, so the next scenario need not wait for the disk: STATE/trash, on the same
    file system."""
    if not tree.exists():
        return
    trash = STATE / "trash"
    trash.mkdir(parents=True, exist_ok=True)
    target = trash / f"{scenario}-{tree.name}-{uuid.uuid4().hex[:8]}"
    tree.rename(target)
    subprocess.Popen(["ionice", "-c", "2", "-n", "7", "nice", "rm", "-rf", str(target)], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def down(scenario: str) -> None:
    state = load_state(scenario)
    if state is None:
        log(f"{scenario}: nothing recorded, nothing to stop")
        return
    logs = STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # All machines are told to halt at once and waited for together (a machine of a scenario is
    # thrown away: one that has not halted in 20 s is killed), then their trees are removed.
    machines = state.get("machines", {})
    t0 = time.monotonic()
    halting = {}
    for name, m in machines.items():
        pid = m.get("pid")
        if pid and is_our_nspawn(pid, m["machine"]):
            halting[name] = (pid, children(pid))  # the machine's PID 1: it must not outlive nspawn
            log(f"{scenario}: stopping {name} (pid {pid})")
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for name, (pid, inits) in halting.items():
        if not wait_gone(pid, max(0.0, deadline - time.monotonic())):
            log(f"{scenario}: {name} did not halt in 20 s, killing it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 10)
        for init in inits:
            if Path(f"/proc/{init}").exists():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init, signal.SIGKILL)  # ends the machine's whole PID namespace
                wait_gone(init, 10)
    t1 = time.monotonic()
    for name, m in machines.items():
        console = scenario_dir(scenario) / f"{name}.console.log"
        if console.exists():  # kept for reading after a failed run
            shutil.copy(console, logs / f"{scenario}-{name}.console.log")
        if m.get("dir"):
            discard(scenario, Path(m["dir"]))
    for veth in state.get("veths", []):  # gone with the machines' namespaces; remove a straggler
        for _ in range(50):
            if run(["ip", "link", "show", veth], check=False, capture_output=True).returncode != 0:
                break
            time.sleep(0.1)
        else:
            run(["ip", "link", "del", veth], check=False, capture_output=True)
    if state.get("bridge") and state.get("bridge_created"):
        run(["ip", "link", "del", state["bridge"]], check=False, stderr=subprocess.DEVNULL)
    remove_rules("nat", "POSTROUTING", NAT_COMMENT_PREFIX + scenario)
    remove_rules("filter", "FORWARD", NAT_COMMENT_PREFIX + scenario)
    shutil.rmtree(scenario_dir(scenario), ignore_errors=True)
    release_browser_net()
    log(f"{scenario}: down (halted in {t1 - t0:.0f} s, put away in {time.monotonic() - t1:.0f} s)")


def parse_host(spec: str) -> tuple[str, list[str], str]:
    """NAME[@SUITE][=ALIAS,...] -> (name, aliases, suite)."""
    name, _, aliases = spec.partition("=")
    name, at, suite = name.partition("@")
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,20}", name):
        die(f"host name {name!r}: use lowercase letters, digits and '-' (max 21)")
    if at and suite not in SUITES:
        die(f"host {name}: Debian release {suite!r} is not one of {', '.join(SUITES)}")
    return name, [a for a in aliases.split(",") if a], suite or DEFAULT_SUITE


def prepare_machine(root: Path, mdir: Path, host: str, addr: str, net, hosts_file: str, pubkey: str):
    run(["cp", "-a", "--reflink=auto", str(root), str(mdir)])
    etc = mdir / "etc"
    (etc / "hostname").write_text(host + "\n")
    # Each machine its own identity (the cached root has one): systemd, journald and the tests
    # that tell one host from another read it.
    (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
    (etc / "hosts").write_text(hosts_file)
    resolv = Path("/etc/resolv.conf").read_text()
    (etc / "resolv.conf").unlink(missing_ok=True)
    (etc / "resolv.conf").write_text(resolv)
    dns = re.findall(r"^nameserver\s+(\S+)", resolv, re.M)
    netdir = etc / "systemd/network"
    netdir.mkdir(parents=True, exist_ok=True)
    (netdir / "10-host0.network").write_text(
        "[Match]\nName=host0\n\n[Network]\n"
        f"Address={addr}/{net.prefixlen}\nGateway={net.network_address + 1}\n"
        + "".join(f"DNS={d}\n" for d in dns)
        + "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    )
    ssh = mdir / "root/.ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh / "authorized_keys").write_text(pubkey)
    (ssh / "authorized_keys").chmod(0o600)
    # Trust what this machine trusts (package registries may be reached through an inspecting
    # proxy), and point pip/uv/node at the system bundle as this machine does.
    cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    for ca in cas:
        shutil.copy2(ca, mdir / "usr/local/share/ca-certificates" / ca.name)
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    (etc / "environment").write_text(
        "".join(f"{k}={bundle}\n" for k in (
            "SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE"))
        + "UV_NATIVE_TLS=1\n"
    )  # fmt: skip
    (etc / "pip.conf").write_text(f"[global]\ncert = {bundle}\n")
    # New identity for this machine: SSH host keys, CA bundle with the extra CAs.
    run(["chroot", str(mdir), "ssh-keygen", "-A"], stdout=subprocess.DEVNULL)
    if cas:
        run(["chroot", str(mdir), "update-ca-certificates"], stdout=subprocess.DEVNULL)


def ssh_ok(key: Path, addr: str, cmd: str) -> subprocess.CompletedProcess:
    return run(["ssh", *SSH_OPTS, "-i", str(key), f"root@{addr}", cmd], check=False, capture_output=True)


def up(scenario: str, specs: list[str], offline: list[str] | None = None) -> list[dict]:
    if not specs:
        die("name at least one host")
    hosts = [parse_host(s) for s in specs]
    if len({h for h, _, _ in hosts}) != len(hosts):
        die("host names must be unique within a scenario")
    unknown = sorted(set(offline or []) - {h for h, _, _ in hosts})
    if unknown:
        die(f"--offline {', '.join(unknown)}: not a host of this scenario ({', '.join(h for h, _, _ in hosts)})")
    if shutil.which("systemd-nspawn") is None or shutil.which("debootstrap") is None:
        die("install systemd-container and debootstrap (apt-get install systemd-container debootstrap iptables)")
    down(scenario)  # leftovers of an earlier (possibly crashed) run of this scenario
    roots = {suite: ensure_root(suite) for suite in sorted({suite for _, _, suite in hosts})}
    sdir = scenario_dir(scenario)
    sdir.mkdir(parents=True, exist_ok=True)
    (STATE / "logs").mkdir(exist_ok=True)
    bridge = f"dptb-{short(scenario, 'bridge')}"
    with exclusive(STATE):  # the subnet is recorded before another scenario picks one
        net = pick_subnet(scenario)
        state: dict = {"scenario": scenario, "subnet": str(net), "bridge": bridge, "machines": {}}
        save_state(scenario, state)

    key = sdir / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"testhost-{scenario}", "-f", str(key)])
    pubkey = (sdir / "id_ed25519.pub").read_text()

    addrs = {h: str(net.network_address + 2 + i) for i, (h, _, _) in enumerate(hosts)}
    hosts_file = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" + "".join(
        f"{addrs[h]}\t{' '.join([h, *aliases])}\n" for h, aliases, _ in hosts
    )

    # Network: a bridge for the scenario, NAT for the package registries.
    if run(["ip", "link", "show", bridge], check=False, capture_output=True).returncode != 0:
        run(["ip", "link", "add", bridge, "type", "bridge"])
        state["bridge_created"] = True
    run(["ip", "addr", "replace", f"{net.network_address + 1}/{net.prefixlen}", "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])
    save_state(scenario, state)
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    run(["iptables", "-t", "nat", "-A", *nat_rule(str(net), scenario)])

    t0 = time.monotonic()
    for host, _aliases, suite in hosts:
        machine = f"dp{short(scenario, host)}-{host}"[:64]
        mdir = sdir / "machines" / host
        mdir.parent.mkdir(parents=True, exist_ok=True)
        state["machines"][host] = {"machine": machine, "dir": str(mdir), "address": addrs[host], "suite": suite,
                                   "offline": host in (offline or [])}  # fmt: skip
        save_state(scenario, state)
        if host in (offline or []):
            run(["iptables", "-I", *offline_rule(addrs[host], str(net), scenario)])
        prepare_machine(roots[suite], mdir, host, addrs[host], net, hosts_file, pubkey)
        logf = open(sdir / f"{host}.console.log", "w")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [
                "systemd-nspawn", "-D", str(mdir), "-M", machine, "--hostname", host,
                "--register=no", "--keep-unit", "--console=passive", "--resolv-conf=off",
                "--timezone=off", f"--network-bridge={bridge}", "--boot",
            ],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        state["machines"][host]["pid"] = proc.pid
        save_state(scenario, state)

    result = []
    for host, aliases, _ in hosts:
        addr = addrs[host]
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            r = ssh_ok(key, addr, "systemctl is-system-running --wait")
            if r.stdout.strip() in ("running", "degraded"):
                break
            pid = state["machines"][host]["pid"]
            if not is_our_nspawn(pid, state["machines"][host]["machine"]):
                shutil.copy(sdir / f"{host}.console.log", STATE / "logs" / f"{scenario}-{host}.console.log")
                die(f"{host} exited while booting: see {STATE / 'logs' / f'{scenario}-{host}.console.log'}")
            if time.monotonic() > deadline:
                die(f"{host} not reachable over SSH after {BOOT_TIMEOUT} s: see {sdir / (host + '.console.log')}")
            time.sleep(0.5)
        links = run(["ip", "-o", "link", "show", "master", bridge], capture_output=True).stdout
        state["veths"] = sorted({line.split(":")[1].strip().split("@")[0] for line in links.splitlines()})
        if r.stdout.strip() == "degraded":
            failed = ssh_ok(key, addr, "systemctl --failed --no-legend --plain").stdout
            log(f"{host}: booted degraded, failed units:\n{failed}")
        result.append({"name": host, "address": addr, "aliases": aliases, "user": "root", "port": 22,
                       "identity_file": str(key)})  # fmt: skip
    state["boot_seconds"] = round(time.monotonic() - t0, 1)
    save_state(scenario, state)
    log(f"{scenario}: {len(hosts)} host(s) up in {state['boot_seconds']} s on {net}")
    return result


def write_instance_config(path: str | None, hosts: list[dict]) -> None:
    """Molecule's delegated driver reads the hosts from this file (JSON is valid YAML)."""
    if path:
        conf = [{"instance": h["name"], "address": h["address"], "user": h["user"], "port": h["port"],
                 "identity_file": h["identity_file"]} for h in hosts]  # fmt: skip
        Path(path).write_text(json.dumps(conf, indent=2) + "\n")
        Path(path).chmod(0o600)


def main() -> None:
    if os.geteuid() != 0:
        die("run as root (nspawn, bridges and NAT need it)")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("root")
    pr.add_argument("--suite", choices=SUITES, default=DEFAULT_SUITE)
    pu = sub.add_parser("up")
    pu.add_argument("scenario")
    pu.add_argument("hosts", nargs="+", metavar="HOST[@SUITE][=ALIAS,...]")
    pu.add_argument("--instance-config", help="also write molecule's instance config here")
    pu.add_argument(
        "--offline",
        action="append",
        default=[],
        metavar="HOST",
        help="this host reaches nothing beyond the scenario's bridge (repeatable)",
    )
    pd = sub.add_parser("down")
    pd.add_argument("scenario")
    pd.add_argument("--instance-config", help="also empty molecule's instance config here")
    ps = sub.add_parser("status")
    ps.add_argument("scenario", nargs="?")
    sub.add_parser("browser")
    a = p.parse_args()
    if a.cmd == "root":
        print(ensure_root(a.suite))
    elif a.cmd == "up":
        hosts = up(a.scenario, a.hosts, a.offline)
        write_instance_config(a.instance_config, hosts)
        print(json.dumps(hosts, indent=2))
    elif a.cmd == "down":
        down(a.scenario)
        write_instance_config(a.instance_config, [])
    elif a.cmd == "browser":
        print(browser_net())
    else:
        print(json.dumps(load_state(a.scenario) if a.scenario else all_states(), indent=2))


if __name__ == "__main__":
    main()
