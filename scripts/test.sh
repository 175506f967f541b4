#!/usr/bin/env bash
# The README test command: installs everything the tests need on a fresh Debian machine
# (as root), then runs every check: ruff, mypy --strict, import-linter, pytest.
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -x`; pytest runs under pytest-xdist.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  git curl file iproute2 iputils-ping procps
  isc-dhcp-server kea-dhcp4-server kea-admin dnsmasq-base
  isc-dhcp-client dhcpcd-base busybox-static
  tftp-hpa tftpd-hpa atftp
  postgresql-15
  qemu-system-x86 qemu-utils ipxe ipxe-qemu ovmf mmdebstrap squashfs-tools
  shim-signed grub-efi-amd64-signed sbsigntool
  cloud-init nginx-light wrk openssh-server openssh-client
  systemd
  chromium chromium-driver
  xorriso gnupg gpgv
  ignition
  openipmi ipmitool
  libvirt-daemon-system libvirt-clients python3-libvirt
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/test.sh: missing Debian packages (${missing[*]}); run as root to install them" >&2
    exit 2
  fi
  echo "== installing Debian packages: ${missing[*]}"
  # Packages such as tftpd-hpa and nginx start a system service on install; a test machine wants none.
  added_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && added_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  ((added_policy)) && rm -f /usr/sbin/policy-rc.d
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
echo "== installing the package and its test dependencies into .venv"
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff";          .venv/bin/ruff check reconciler tests bench
echo "== mypy --strict"; .venv/bin/mypy
echo "== import-linter"; .venv/bin/lint-imports
# pytest-xdist: the tests mostly wait on daemons and processes, so workers overlap well even on
# 2 CPUs; tests/conftest.py keeps the whole-machine tests (QEMU e2e, bench smokes) on one worker.
# NETBOOT_TEST_WORKERS=0 runs everything in one process (for `-s`, pdb and the like).
# Bytecode caches on: every test daemon is a fresh `python -m reconciler` that otherwise compiles
# all of reconciler/ again (~0.5-1.5 s a start, hundreds of starts); __pycache__ is gitignored.
unset PYTHONDONTWRITEBYTECODE
workers=${NETBOOT_TEST_WORKERS:-2}
echo "== pytest (${workers} workers)"
exec .venv/bin/pytest -n "$workers" --dist loadgroup "$@"
