#!/usr/bin/env python3
"""An offline bundle: everything the platform's roles install on Debian 12 hosts, built on a
machine that reaches Debian's and PyPI's package registries, for sites whose hosts reach neither.

    python3 tools/bundle.py [--out DIR] [--keycloak-archive FILE]

DIR (default: bundle-bookworm) then holds:
  apt.tar      the Debian packages the roles install, with every dependency and recommendation
               resolved from nothing installed, as a flat repository (Packages, Release)
  wheels.tar   every file of every Python environment's hashed lock (the hub, users' servers,
               Superset, the exec API) for the hosts' Python, uv's wheel, and the build tools of
               the locks' one source distribution (python-geohash)
  keycloak/    the Keycloak archive, when one is given
  bundle.json  what it is for (release, architecture, Python) and the hash of its inputs
  SHA256SUMS   the checksum of each file above

The inventory variable `platform_offline_bundle: DIR` makes the roles install from it and from
nothing else (roles/common/README.md, "Offline installs"). Run again, the command rebuilds only
when its inputs (the locks, the package list, this script) changed. Debian 12 only: on Debian 13
Superset's interpreter comes from Debian 12 (README, "Debian 13"), which one flat repository
cannot pin.

Debian's packages are verified by apt against the mirror's signed Release files while they are
downloaded, and the wheels by pip against the locks' hashes (and again by uv on the hosts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from testhost import debian_mirror  # noqa: E402  (one way to find the mirror)

SUITE = "bookworm"
ARCH = "amd64"
PYTHON = "3.11"
# glibc 2.36 (Debian 12): every manylinux tag up to it, named one by one (pip does not expand a
# --platform to the older tags a host accepts).
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]  # fmt: skip
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
PIP = "pip==25.2"

# What each role installs from Debian on Debian 12 (its tasks' apt lists, and the templated ones
# resolved for Debian 12); tests/test_bundle.py checks that every literal name in the roles' apt
# tasks is here, and the default scenario converges without a route to any registry.
PACKAGES = {
    "common": ["acl", "ca-certificates", "locales", "python3-apt", "python3-psycopg2", "systemd-timesyncd",
               "python3-cryptography"],
    "postgresql": ["postgresql-15", "postgresql-client-15", "python3-psycopg2"],
    "analytics": ["postgresql-client", "python3-psycopg2"],
    "backup": ["restic"],
    "exec_api": ["python3-packaging", "acl"],
    "jupyterhub": ["node-configurable-http-proxy", "ca-certificates"],
    "keycloak": ["openjdk-17-jre-headless", "nftables"],
    "nginx": ["nginx", "certbot"],
    "platform_accounts": ["acl", "passwd"],
    "python_env": ["python3-venv"],
    "superset": ["python3-dev", "g++", "redis-server", "ca-certificates"],
}  # fmt: skip

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


def inputs_hash(locks: dict[str, Path]) -> str:
    h = hashlib.sha256()
    for name, path in sorted(locks.items()):
        # What is locked, not the comments (a header may name a temporary file).
        lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        h.update(name.encode() + b"\0" + "\n".join(lines).encode() + b"\0")
    h.update(json.dumps([PACKAGES, EXTRA_WHEELS, uv_version(), SUITE, ARCH, PYTHON, PLATFORMS]).encode())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def wheels(locks: dict[str, Path], dest: Path) -> None:
    """Every file of every lock, for the hosts' Python (CPython 3.11 on glibc 2.36): wheels where
    PyPI has them, a lock's source distribution where it has only that."""
    target = ["--python-version", PYTHON, "--implementation", "cp", "--abi", "cp311", "--abi", "abi3",
              "--abi", "none", *(f"--platform={p}" for p in PLATFORMS)]  # fmt: skip
    # pip, not uv: uv downloads nothing without installing it. Run by uv, pinned, in its own
    # environment (the controller's has no pip).
    pip = ["uv", "tool", "run", "--quiet", "--from", PIP, "pip", "download", "--quiet", "--disable-pip-version-check",
           "--dest", str(dest)]  # fmt: skip
    for name, lock in sorted(locks.items()):
        log(f"wheels of {name} ({lock.relative_to(ROOT) if lock.is_relative_to(ROOT) else lock.name})")
        run([*pip, "--no-deps", "--require-hashes", *target, "-r", str(lock)])
    log(f"uv {uv_version()}, {', '.join(EXTRA_WHEELS)}")
    run([*pip, "--no-deps", "--only-binary", ":all:", *target, f"uv=={uv_version()}", *EXTRA_WHEELS])


def debs(dest: Path, work: Path) -> None:
    """The roles' packages and everything they depend on or recommend, resolved as if nothing
    were installed, so that any Debian 12 host finds what it lacks; then a flat repository."""
    mirror = debian_mirror().rstrip("/")
    security = mirror + "-security"
    state, cache = work / "apt-state", work / "apt-cache"
    for d in (state / "lists/partial", cache / "archives/partial", dest / "partial", work / "none"):
        d.mkdir(parents=True, exist_ok=True)
    (work / "status").write_text("")
    sources = work / "sources.list"
    sources.write_text(
        f"deb [signed-by={KEYRING}] {mirror} {SUITE} main\n"
        f"deb [signed-by={KEYRING}] {mirror} {SUITE}-updates main\n"
        f"deb [signed-by={KEYRING}] {security} {SUITE}-security main\n"
    )
    opts = [
        f"-oDir::Etc::SourceList={sources}", f"-oDir::Etc::SourceParts={work / 'none'}",
        f"-oDir::Etc::Preferences={work / 'none' / 'preferences'}", f"-oDir::Etc::PreferencesParts={work / 'none'}",
        f"-oDir::State={state}", f"-oDir::State::status={work / 'status'}", f"-oDir::Cache={cache}",
        f"-oDir::Cache::archives={dest}", f"-oAPT::Architecture={ARCH}", f"-oAPT::Architectures={ARCH}",
        "-oDebug::NoLocking=true", "-oAPT::Install-Recommends=true", "-oAPT::Get::AllowUnauthenticated=false",
    ]  # fmt: skip
    log(f"Debian {SUITE} package lists from {mirror}")
    run(["apt-get", *opts, "-q", "update"])
    names = sorted({p for ps in PACKAGES.values() for p in ps})
    log(f"Debian packages: {len(names)} named, with what they depend on and recommend")
    run(["apt-get", *opts, "-q", "-y", "--download-only", "install", *names],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip
    shutil.rmtree(dest / "partial", ignore_errors=True)
    (dest / "lock").unlink(missing_ok=True)
    packages = run(["dpkg-scanpackages", "--multiversion", "."], cwd=dest).stdout
    (dest / "Packages").write_text(packages)
    digest = hashlib.sha256(packages.encode()).hexdigest()
    (dest / "Release").write_text(
        "Origin: platform-offline\nLabel: platform-offline\nSuite: platform-offline\n"
        f"Codename: platform-offline\nArchitectures: {ARCH} all\nDescription: the data platform's offline bundle\n"
        f"SHA256:\n {digest} {len(packages.encode())} Packages\n"
    )


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
    ap.add_argument("--out", type=Path, default=Path(f"bundle-{SUITE}"), help="the bundle's directory")
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

    out = args.out.resolve()
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        work = Path(tmp)
        locks = {**LOCKS, "exec_api": exec_api_lock(work)}
        key = inputs_hash(locks)
        meta = out / "bundle.json"
        if meta.is_file() and json.loads(meta.read_text()).get("inputs") == key and (out / "SHA256SUMS").is_file():
            log(f"{out} is up to date (inputs {key})")
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        new = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
        try:
            (work / "wheels").mkdir()
            wheels(locks, work / "wheels")
            debs(work / "apt", work)
            tar(work / "wheels", new / "wheels.tar")
            tar(work / "apt", new / "apt.tar")
            if args.keycloak_archive:
                (new / "keycloak").mkdir()
                shutil.copy2(args.keycloak_archive, new / "keycloak" / args.keycloak_archive.name)
            counts = {"debs": len(list((work / "apt").glob("*.deb"))), "wheels": len(list((work / "wheels").iterdir()))}
            (new / "bundle.json").write_text(
                json.dumps(
                    {"release": SUITE, "architecture": ARCH, "python": PYTHON, "inputs": key, **counts}, indent=2
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
