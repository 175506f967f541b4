#!/usr/bin/env bash
# The README run command: sets up .venv when needed, then runs the daemon on example-repo/,
# serving HTTP and TFTP on loopback with unprivileged ports and no DHCP. Nodes' scripts and
# seeds go to any client (--trust-any-client), so the curl the daemon prints shows a node's
# script from this machine; only loopback listens. Extra arguments go to the daemon
# (e.g. `--dhcp-listen 127.0.0.1:6767`). example-repo/secrets.yaml is decrypted with the DEMO identity
# contrib/example-age-identity.txt (a real site keeps its identity outside the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/netboot-reconcile ]]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e .
fi
exec .venv/bin/netboot-reconcile --repo example-repo \
  --http-listen 127.0.0.1:8080 --tftp-listen 127.0.0.1:6969 --no-dhcp --trust-any-client \
  --age-identity contrib/example-age-identity.txt "$@"
