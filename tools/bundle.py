#!/usr/bin/env python3
"""An offline bundle: everything the platform's roles install on Debian 12 or Debian 13 hosts,
built on a machine that reaches Debian's and PyPI's package registries, for sites whose hosts
reach neither.

    .venv/bin/python tools/bundle.py [--release bookworm|trixie] [--out DIR] [--keycloak-archive FILE]

DIR (default: bundle-RELEASE) then holds:
  apt.tar      the Debian packages the roles install, with every dependency and recommendation
               resolved from nothing installed, as a flat repository (Packages, Release)
  wheels.tar   every file of every Python environment's hashed lock (the hub, users' servers,
               Superset, the exec API) for the Python each runs on there, uv's wheel, and the
               build tools of the locks' one source distribution (python-geohash)
  keycloak/    the Keycloak archive, when one is given
  bundle.json  what it is for (release, architecture, Python) and the hash of its inputs
  SHA256SUMS   the checksum of each file above

The inventory variable `platform_offline_bundle: DIR` makes the roles install from it and from
nothing else (roles/common/README.md, "Offline installs"). Run again, the command rebuilds only
when its inputs (the locks, the package list, this script) changed. A bundle is for one release:
on Debian 13 it also holds Debian 12's python3.11 for Superset (README, "Debian 13"), resolved
under the superset role's own apt pin, so the flat repository holds just what that pin lets in.

Debian's packages are verified by apt against the mirror's signed Release files while they are
downloaded, and the wheels by pip against the locks' hashes (and again by uv on the hosts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from testhost import debian_mirror  # noqa: E402  (one way to find the mirror)

ARCH = "amd64"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
PIP = "pip==25.2"

# What each role installs from Debian on every release (its tasks' apt lists); tests/test_bundle.py
# checks that every literal name in the roles' apt tasks is here, and the default (Debian 12) and
# trixie (Debian 13) scenarios converge without a route to any registry.
PACKAGES = {
    "common": ["acl", "ca-certificates", "locales", "python3-apt", "python3-psycopg2", "systemd-timesyncd",
               "python3-cryptography"],
    "postgresql": ["python3-psycopg2"],
    "analytics": ["postgresql-client", "python3-psycopg2"],
    "backup": ["restic"],
    "exec_api": ["python3-packaging", "acl"],
    "jupyterhub": ["node-configurable-http-proxy", "ca-certificates"],
    "keycloak": ["nftables"],
    "nginx": ["nginx", "certbot"],
    "platform_accounts": ["acl", "passwd"],
    "python_env": ["python3-venv"],
    "superset": ["g++", "redis-server", "ca-certificates"],
}  # fmt: skip

# Each release: the hosts' Python and glibc, and the names the roles template by release
# (postgresql's and keycloak's vars, superset's interpreter; tests/test_bundle.py compares them).
# On Debian 13 Superset runs on Debian 12's python3.11 (superset_python_from_bookworm), resolved
# from bookworm under the superset role's pin.
RELEASES = {
    "bookworm": {"debian": "12", "python": "3.11", "glibc": 36, "from_bookworm": False,
                 "packages": {"postgresql": ["postgresql-15", "postgresql-client-15"],
                              "keycloak": ["openjdk-17-jre-headless"], "superset": ["python3-dev"]}},
    "trixie": {"debian": "13", "python": "3.13", "glibc": 41, "from_bookworm": True,
               "packages": {"postgresql": ["postgresql-17", "postgresql-client-17"],
                            "keycloak": ["openjdk-21-jre-headless"], "superset": ["python3.11", "python3.11-dev"]}},
}  # fmt: skip
# Superset's environment is on Python 3.11 on every release (Debian 12's, README "Debian 13").
SUPERSET_PYTHON = "3.11"
# Each Python's full version on the hosts (Debian 12's 3.11, Debian 13's 3.13), for the locks'
# environment markers.
FULL_VERSIONS = {"3.11": "3.11.2", "3.13": "3.13.5"}
SUPERSET_VARS = ROOT / "roles/superset/vars/main.yml"

# Each Python environment's lock: the roles' files, and the exec API's exported from its uv.lock
# as roles/python_env/tasks/wheel.yml exports it.
LOCKS = {
    "jupyterhub-hub": ROOT / "roles/jupyterhub/files/requirements-hub.txt",
    "jupyterhub-user": ROOT / "roles/jupyterhub/files/requirements-user.txt",
    "superset": ROOT / "roles/superset/files/requirements.txt",
}
EXEC_API = ROOT / "files/exec_api"
# Besides the locks: uv (roles/python_env installs it with pip) and what uv needs to build
# python-geohash, the one source distribution in the locks (setuptools' legacy backend).
EXTRA_WHEELS = ["setuptools==80.9.0", "wheel==0.45.1"]


def log(msg: str) -> None:
    print(f"[bundle] {msg}", flush=True)


def die(msg: str) -> None:
    log(f"error: {msg}")
    sys.exit(1)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
        die(f"{' '.join(cmd[:3])} … failed (exit {out.returncode}):\n{tail}")
    return out


def uv_version() -> str:
    text = (ROOT / "roles/python_env/defaults/main.yml").read_text()
    for line in text.splitlines():
        if line.startswith("python_env_uv_version:"):
            return line.split(":", 1)[1].strip().strip("\"'")
    die("python_env_uv_version not found in roles/python_env/defaults/main.yml")
    raise AssertionError


def exec_api_lock(work: Path) -> Path:
    lock = work / "exec_api-requirements.txt"
    run(["uv", "export", "--quiet", "--frozen", "--no-dev", "--no-emit-project", "--no-header", "--format",
         "requirements-txt", "--project", str(EXEC_API), "--output-file", str(lock)])  # fmt: skip
    return lock


def packages(release: str) -> list[str]:
    """Every Debian package the roles install on hosts of this release, by name."""
    names = {p for ps in PACKAGES.values() for p in ps}
    names.update(p for ps in RELEASES[release]["packages"].values() for p in ps)
    return sorted(names)


def platforms(release: str) -> list[str]:
    """The release's glibc: every manylinux tag up to it, named one by one (pip does not expand a
    --platform to the older tags a host accepts)."""
    top = RELEASES[release]["glibc"]
    return [f"manylinux_2_{minor}_x86_64" for minor in range(top, 4, -1)] + [
        "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]  # fmt: skip


def lock_python(release: str, name: str) -> str:
    return SUPERSET_PYTHON if name == "superset" else RELEASES[release]["python"]


def bookworm_pin() -> tuple[list[str], str]:
    """The superset role's apt pin for Debian 12's python3.11 on Debian 13 (its vars: the packages
    let in), the same preferences it writes on the hosts, so that the bundle holds what an online
    host would install."""
    import yaml  # the controller tools' (like packaging, below)

    names = yaml.safe_load(SUPERSET_VARS.read_text())["__superset_bookworm_packages"].split()
    prefs = "\n".join(
        f"Package: {' '.join(names)}\nPin: release n={suite}\nPin-Priority: 100\n\n"
        f"Package: *\nPin: release n={suite}\nPin-Priority: -1\n"
        for suite in ("bookworm", "bookworm-security")
    )
    return names, prefs


def inputs_hash(locks: dict[str, Path], release: str = "bookworm") -> str:
    h = hashlib.sha256()
    for name, path in sorted(locks.items()):
        # What is locked, not the comments (a header may name a temporary file).
        lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        h.update(name.encode() + b"\0" + "\n".join(lines).encode() + b"\0")
    pin = bookworm_pin() if RELEASES[release]["from_bookworm"] else None
    h.update(json.dumps([PACKAGES, RELEASES[release], EXTRA_WHEELS, uv_version(), release, ARCH, pin]).encode())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def for_python(lock: Path, python: str, work: Path) -> Path:
    """The lock's requirements whose environment markers hold for CPython `python` on x86-64 Linux,
    without their markers: pip download evaluates markers on the Python that runs it, whatever
    --python-version says, so a lock's `numpy==2.5.5 ; python_full_version >= '3.12'` would be
    left out of a Debian 13 bundle made on Debian 12 (and the 3.11 line taken instead)."""
    try:
        from packaging.markers import Marker
    except ImportError:
        die("the packaging library is missing: run it with the controller tools' Python (make tools, then "
            ".venv/bin/python tools/bundle.py)")  # fmt: skip
    env = {"python_version": python, "python_full_version": FULL_VERSIONS[python], "implementation_name": "cpython",
           "implementation_version": FULL_VERSIONS[python], "platform_python_implementation": "CPython",
           "sys_platform": "linux", "platform_system": "Linux",
           "platform_machine": "x86_64", "os_name": "posix"}  # fmt: skip
    kept, keep = [], True
    for line in lock.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            requirement, _, marker = line.removesuffix("\\").partition(";")
            keep = not marker.strip() or Marker(marker.strip()).evaluate(env)
            line = requirement.rstrip() + (" \\" if line.endswith("\\") else "")
        if keep:
            kept.append(line)
    out = work / f"{lock.stem}-{python}.txt"
    out.write_text("\n".join(kept) + "\n")
    return out


def wheels(locks: dict[str, Path], dest: Path, release: str) -> None:
    """Every file of every lock, for the Python that environment runs on there (CPython 3.11 on
    glibc 2.36 on Debian 12; 3.13, and 3.11 for Superset, on glibc 2.41 on Debian 13): wheels
    where PyPI has them, a lock's source distribution where it has only that."""

    def target(python: str) -> list[str]:
        abi = "cp" + python.replace(".", "")
        return ["--python-version", python, "--implementation", "cp", "--abi", abi, "--abi", "abi3",
                "--abi", "none", *(f"--platform={p}" for p in platforms(release))]  # fmt: skip

    # pip, not uv: uv downloads nothing without installing it. Run by uv, pinned, in its own
    # environment (the controller's has no pip).
    pip = ["uv", "tool", "run", "--quiet", "--from", PIP, "pip", "download", "--quiet", "--disable-pip-version-check",
           "--dest", str(dest)]  # fmt: skip
    for name, lock in sorted(locks.items()):
        python = lock_python(release, name)
        where = lock.relative_to(ROOT) if lock.is_relative_to(ROOT) else lock.name
        log(f"wheels of {name} ({where}) for Python {python}")
        run([*pip, "--no-deps", "--require-hashes", *target(python), "-r", str(for_python(lock, python, dest.parent))])
    log(f"uv {uv_version()}, {', '.join(EXTRA_WHEELS)}")
    for python in sorted({lock_python(release, name) for name in locks}):
        run([*pip, "--no-deps", "--only-binary", ":all:", *target(python), f"uv=={uv_version()}", *EXTRA_WHEELS])


def other_release(plan: str, release: str) -> list[str]:
    """The packages (name=version) of `apt-get --simulate install`'s plan that come from another
    Debian release than this one: `Inst NAME (VERSION Debian:12.12/oldstable, ... [amd64])`."""
    major = RELEASES[release]["debian"]
    return sorted(
        f"{m[1]}={m[2]}"
        for m in re.finditer(r"^Inst (\S+) \((\S+) ([^\[]*)", plan, re.M)
        if not re.search(rf"\b[\w-]+:{major}[./]", m[3])
    )


def debs(dest: Path, work: Path, release: str) -> list[str]:
    """The roles' packages and everything they depend on or recommend, resolved as if nothing
    were installed, so that any host of the release finds what it lacks; then a flat repository.
    On Debian 13, bookworm's sources too, under the superset role's pin: only its python3.11
    packages come from there, as on an online host. Returns those, as name=version."""
    mirror = debian_mirror().rstrip("/")
    security = mirror + "-security"
    state, cache = work / "apt-state", work / "apt-cache"
    for d in (state / "lists/partial", cache / "archives/partial", dest / "partial", work / "none"):
        d.mkdir(parents=True, exist_ok=True)
    (work / "status").write_text("")
    sources = work / "sources.list"
    sources.write_text(
        f"deb [signed-by={KEYRING}] {mirror} {release} main\n"
        f"deb [signed-by={KEYRING}] {mirror} {release}-updates main\n"
        f"deb [signed-by={KEYRING}] {security} {release}-security main\n"
    )
    preferences = work / "preferences"
    preferences.write_text("")
    if RELEASES[release]["from_bookworm"]:
        with sources.open("a") as f:
            f.write(f"deb [signed-by={KEYRING}] {mirror} bookworm main\n"
                    f"deb [signed-by={KEYRING}] {security} bookworm-security main\n")  # fmt: skip
        preferences.write_text(bookworm_pin()[1])
    opts = [
        f"-oDir::Etc::SourceList={sources}", f"-oDir::Etc::SourceParts={work / 'none'}",
        f"-oDir::Etc::Preferences={preferences}", f"-oDir::Etc::PreferencesParts={work / 'none'}",
        f"-oDir::State={state}", f"-oDir::State::status={work / 'status'}", f"-oDir::Cache={cache}",
        f"-oDir::Cache::archives={dest}", f"-oAPT::Architecture={ARCH}", f"-oAPT::Architectures={ARCH}",
        "-oDebug::NoLocking=true", "-oAPT::Install-Recommends=true", "-oAPT::Get::AllowUnauthenticated=false",
    ]  # fmt: skip
    log(f"Debian {release} package lists from {mirror}")
    run(["apt-get", *opts, "-q", "update"])
    names = packages(release)
    log(f"Debian packages: {len(names)} named, with what they depend on and recommend")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    plan = run(["apt-get", *opts, "-q", "-y", "--simulate", "install", *names], env=env).stdout
    other = other_release(plan, release)
    allowed = bookworm_pin()[0] if RELEASES[release]["from_bookworm"] else []
    if any(p.split("=")[0] not in allowed for p in other):
        die(f"packages of another Debian release than {release}'s would be bundled: {', '.join(sorted(other))}")
    run(["apt-get", *opts, "-q", "-y", "--download-only", "install", *names], env=env)
    shutil.rmtree(dest / "partial", ignore_errors=True)
    (dest / "lock").unlink(missing_ok=True)
    index = run(["dpkg-scanpackages", "--multiversion", "."], cwd=dest).stdout
    (dest / "Packages").write_text(index)
    digest = hashlib.sha256(index.encode()).hexdigest()
    (dest / "Release").write_text(
        "Origin: platform-offline\nLabel: platform-offline\nSuite: platform-offline\n"
        f"Codename: platform-offline\nArchitectures: {ARCH} all\nDescription: the data platform's offline bundle\n"
        f"SHA256:\n {digest} {len(index.encode())} Packages\n"
    )
    return other


def tar(src: Path, dest: Path) -> None:
    """A plain tar (its members are compressed already), members sorted and owned by root, so
    the same content makes the same file (the hosts copy it only when it changed)."""
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as t:
        for path in sorted(src.rglob("*")):
            info = t.gettarinfo(str(path), arcname=str(path.relative_to(src)))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with path.open("rb") as f:
                    t.addfile(info, f)
            else:
                t.addfile(info)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--release",
        choices=sorted(RELEASES),
        default="bookworm",
        help="the hosts' Debian release: bookworm (12, the default) or trixie (13)",
    )
    ap.add_argument("--out", type=Path, help="the bundle's directory (default: bundle-RELEASE)")
    ap.add_argument("--keycloak-archive", type=Path, help="a keycloak-<version>.tar.gz to carry")
    args = ap.parse_args()
    if os.geteuid() != 0:
        die("run it as root: apt-get downloads Debian's packages as root")
    for tool in ("apt-get", "dpkg-scanpackages", "uv"):
        if shutil.which(tool) is None:
            hint = "apt-get install dpkg-dev" if tool == "dpkg-scanpackages" else "make tools, then .venv/bin on PATH"
            die(f"{tool} is missing: {hint}")
    if args.keycloak_archive and not args.keycloak_archive.is_file():
        die(f"--keycloak-archive {args.keycloak_archive}: no such file")

    release = args.release
    out = (args.out or Path(f"bundle-{release}")).resolve()
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        work = Path(tmp)
        locks = {**LOCKS, "exec_api": exec_api_lock(work)}
        key = inputs_hash(locks, release)
        meta = out / "bundle.json"
        if meta.is_file() and json.loads(meta.read_text()).get("inputs") == key and (out / "SHA256SUMS").is_file():
            log(f"{out} is up to date (inputs {key})")
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        new = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
        try:
            (work / "wheels").mkdir()
            wheels(locks, work / "wheels", release)
            from_bookworm = debs(work / "apt", work, release)
            tar(work / "wheels", new / "wheels.tar")
            tar(work / "apt", new / "apt.tar")
            if args.keycloak_archive:
                (new / "keycloak").mkdir()
                shutil.copy2(args.keycloak_archive, new / "keycloak" / args.keycloak_archive.name)
            counts = {"debs": len(list((work / "apt").glob("*.deb"))), "wheels": len(list((work / "wheels").iterdir()))}
            (new / "bundle.json").write_text(
                json.dumps(
                    {
                        "release": release,
                        "architecture": ARCH,
                        "python": RELEASES[release]["python"],
                        "inputs": key,
                        **counts,
                        # Debian 12's packages in a Debian 13 bundle (name=version): the superset
                        # role's python3.11 and what its pin lets in, nothing else.
                        "from_bookworm": from_bookworm,
                    },
                    indent=2,
                )
                + "\n"
            )
            files = sorted(p for p in new.rglob("*") if p.is_file())
            (new / "SHA256SUMS").write_text("".join(f"{sha256(p)}  {p.relative_to(new)}\n" for p in files))
            new.chmod(0o755)
            if out.exists():
                shutil.rmtree(out)
            new.rename(out)
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            raise
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log(f"{out}: {counts['debs']} Debian packages, {counts['wheels']} wheels, {size / 2**20:.0f} MiB (inputs {key})")


if __name__ == "__main__":
    main()
