#!/usr/bin/env bash
# The Debian packages `make demo` and `make test` need on the machine they run on (Debian 12 or
# 13), installed when missing; nothing is done when all are there. When they cannot be installed,
# one line says why and what to run, and the exit status is 1.
#   demo: test hosts (debootstrap, systemd-nspawn, a bridge with NAT) and SSH to them;
#   test: those, plus the PostgreSQL server binaries the exec API's suite starts by itself,
#         Chromium and NSS tools for the browser-driven login tests, npm for the test OpenID
#         provider's locked dependencies, dpkg-dev for the offline bundle's package index
#         (tools/bundle.py, which the default scenario builds).
set -uo pipefail

what=${1:-test}
packages=(debootstrap systemd-container iptables iproute2 openssh-client)
if [ "$what" = test ]; then
  # PostgreSQL of the release (the suite looks for /usr/lib/postgresql/<version>/bin).
  . /etc/os-release
  case "${VERSION_ID:-}" in
    12) packages+=(postgresql-15) ;;
    13) packages+=(postgresql-17) ;;
    *) packages+=(postgresql) ;;
  esac
  packages+=(make chromium libnss3-tools dpkg-dev)
  command -v npm >/dev/null || packages+=(nodejs npm)
elif [ "$what" != demo ]; then
  echo "usage: $0 demo|test" >&2
  exit 2
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "make $what needs Debian packages that are not installed (${missing[*]}) and installing them needs root: run it as root, or first: apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "make $what: installing ${missing[*]}"
if ! out=$(apt-get update -qq 2>&1); then
  echo "make $what: cannot read the Debian package lists (apt-get update: $(tail -n 1 <<<"$out")); check the network to the package mirror, then run it again" >&2
  exit 1
fi
if ! out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>&1); then
  echo "make $what: cannot install ${missing[*]} (apt-get install: $(tail -n 1 <<<"$out")); install them by hand, then run it again" >&2
  exit 1
fi
