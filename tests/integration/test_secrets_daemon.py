"""A secret in user-data through a real daemon (issue 27 item 2): the node gets the plaintext,
other addresses get 403, and the plaintext is nowhere else: not in any log line, `/status`, the
results store (SQLite file and its WAL), `diff` output, `render` without the identity, or any
rendered file but the node's own user-data (mode 0600 under generations/).

Real parts: git, the daemon as a child process (`netboot-reconcile run`, its worker process
decrypting with pyrage), http.client from chosen loopback source addresses (127.0.0.0/8 is all
loopback), the CLI for `diff`, `render` and `secrets set`. Fails on the old code: no secrets.
"""

from __future__ import annotations

import http.client
import json
import os
import pty
import stat
import subprocess
import sys
from pathlib import Path

import pyrage
import yaml

from tests.integration.daemon_support import ROOT, DaemonProcess, WorkTree, git, wait_for

IDENTITY = pyrage.x25519.Identity.generate()
PLAIN = "$6$rounds=5000$pl41nt3xt$ThisHashMustOnlyReachNode1"
CHANGED = "$6$rounds=5000$s3c0nd$TheNextHashMustNotLeakEither"
NODE1, NODE2 = "127.0.0.11", "127.0.0.12"
MAC1 = "52:54:00:aa:bb:01"
SITE = """\
server: {address: 127.0.0.1, http_port: 80}
dhcp:
  mode: off
  subnets:
    - subnet: 127.0.0.0/24
"""


def node(mac: str, ip: str) -> str:
    return (f"mac: {mac}\nip: {ip}\nprofile: ubuntu-2204-install\n"
            "metadata: {ssh_authorized_keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx8 ops@lab.example]}\n")


def cli(*args: object, stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *map(str, args)], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)


def get(port: int, path: str, source: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def served(daemon: DaemonProcess, revision: str) -> None:
    wait_for(lambda: daemon.served_revision() == revision,
             f"{revision[:12]} applied\n{daemon.log()[-3000:]}\n{daemon.status()}", timeout=60)


def test_a_secret_reaches_its_node_and_nothing_else(tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "site")
    for old in (tree.path / "nodes").iterdir():
        old.unlink()
    identity = tmp_path / "age-identity"
    identity.write_text(f"# test identity\n{IDENTITY}\n")
    tree.write({"netboot.yaml": SITE, "nodes/node-1.yaml": node(MAC1, NODE1),
                "nodes/node-2.yaml": node("52:54:00:aa:bb:02", NODE2),
                "secrets.yaml": f"recipients:\n  - {IDENTITY.to_public()}\n"})
    made = cli("secrets", "set", "root_password_hash", "--repo", tree.path, stdin=PLAIN + "\n")
    assert made.returncode == 0, made.stderr
    assert PLAIN not in made.stdout + made.stderr and PLAIN not in (tree.path / "secrets.yaml").read_text()
    base = tree.commit("secrets for this site")

    daemon = DaemonProcess(str(tree.path), tmp_path / "state", extra=["--age-identity", str(identity)])
    daemon.args.remove("--trust-any-client")  # the node's own address only, as deployed
    daemon.start()
    try:
        served(daemon, base)
        seed = f"/cloud-init/{MAC1}/user-data"
        status, body = get(daemon.port, seed, NODE1)
        assert status == 200 and f'password: "{PLAIN}"'.encode() in body, body
        for other in (NODE2, "127.0.0.1"):  # another node's address; an address the node does not have
            status, body = get(daemon.port, seed, other)
            assert status == 403 and PLAIN.encode() not in body, (other, status, body)
        assert get(daemon.port, f"/r/{base}{seed}", NODE2)[0] == 403

        daemon.wait_persisted(base)  # served first, then written
        generation = tmp_path / "state" / "generations" / base
        user_data = generation / "cloud-init" / MAC1 / "user-data"
        assert stat.S_IMODE(user_data.stat().st_mode) == 0o600
        holding = sorted(str(p.relative_to(generation)) for p in generation.rglob("*")
                         if p.is_file() and PLAIN.encode() in p.read_bytes())
        assert holding == [f"cloud-init/{MAC1}/user-data", "cloud-init/52:54:00:aa:bb:02/user-data"]

        # a second commit changes the value: diff says so without either value
        changed = cli("secrets", "set", "root_password_hash", "--repo", tree.path, stdin=CHANGED)
        assert changed.returncode == 0, changed.stderr
        head = tree.commit("rotate the password hash")
        served(daemon, head)
        assert CHANGED.encode() in get(daemon.port, seed, NODE1)[1]
        status_text = json.dumps(daemon.status_doc())
        diff = cli("diff", "--repo", tree.path, base, head, "--age-identity", identity)
        diff_plain = cli("diff", "--repo", tree.path, base, head)
        rendered = cli("render", tree.path, "--out", tmp_path / "out")
        assert diff.returncode == 1 and '<secret:root_password_hash:changed>' in diff.stdout, diff.stdout
        assert rendered.returncode == 0, rendered.stderr
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]

    store = b"".join(p.read_bytes() for p in (tmp_path / "state").glob("results.sqlite3*"))
    out_files = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert b"<secret:root_password_hash>" in out_files
    places = {"log": daemon.log(), "/status": status_text, "diff": diff.stdout + diff.stderr,
              "diff without identity": diff_plain.stdout + diff_plain.stderr,
              "render": rendered.stdout + rendered.stderr, "render output": out_files.decode(errors="replace"),
              "results store": store.decode(errors="replace"),
              "git history": git(tree.path, "log", "-p", "--all")}
    assert store and "revision=" in places["log"]
    for secret in (PLAIN, CHANGED):
        for word in (secret, secret.split("$")[-1]):
            leaks = [where for where, text in places.items() if word in text]
            assert leaks == [], f"{word!r} found in {leaks}"


def test_secrets_set_prompts_on_a_terminal_and_never_takes_the_value_as_an_argument(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "secrets.yaml").write_text(f"recipients: [{IDENTITY.to_public()}]\n")
    refused = cli("secrets", "set", "token", "s3cr3t-on-argv", "--repo", site)
    assert refused.returncode == 2 and "unrecognized arguments" in refused.stderr
    assert "secrets:" not in (site / "secrets.yaml").read_text()

    # a real terminal: the prompt (no echo), asked twice
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on the pty as its controlling terminal
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "reconciler", "secrets", "set", "token", "--repo", str(site)])
    seen = b""
    for answer in (b"typed-value\n", b"typed-value\n"):
        while b"value: " not in seen and b"again: " not in seen:
            seen += os.read(fd, 1024)
        seen = b""
        os.write(fd, answer)
    rest = b""
    try:
        while chunk := os.read(fd, 1024):
            rest += chunk
    except OSError:  # EIO: the child closed the terminal
        pass
    _, code = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0, rest
    assert b"typed-value" not in rest  # not echoed
    armored = yaml.safe_load((site / "secrets.yaml").read_text())["secrets"]["token"]
    assert pyrage.decrypt(armored.encode(), [IDENTITY]) == b"typed-value"
