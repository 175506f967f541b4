"""Helpers for the daemon tests: real git repositories in tmp dirs and real daemon processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "example-repo"
DEMO_IDENTITY = ROOT / "contrib" / "example-age-identity.txt"  # decrypts example-repo/secrets.yaml
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}
NODE1_MAC = "52:54:00:aa:bb:01"
INVALID_NODE = "mac: 52:54:00:aa:bb:01\nip: 10.10.10.201\nprofile: no-such-profile\n"


def git(cwd: Path, *args: str, check: bool = True) -> str:
    env = {**os.environ, **GIT_ENV}
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.strip()


class WorkTree:
    """A git work tree seeded with example-repo/, with helpers to commit and push."""

    def __init__(self, path: Path, branch: str = "main") -> None:
        self.path = path
        shutil.copytree(EXAMPLE, path)
        git(path, "init", "-q", "-b", branch)
        self.commit("initial")

    def write(self, files: Mapping[str, str | None]) -> None:
        for rel, text in files.items():
            target = self.path / rel
            if text is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)

    def commit(self, message: str, files: Mapping[str, str | None] | None = None) -> str:
        if files:
            self.write(files)
        git(self.path, "add", "-A")
        git(self.path, "commit", "-q", "--allow-empty", "-m", message)
        return self.head()

    def head(self) -> str:
        return git(self.path, "rev-parse", "HEAD")

    def bare_remote(self, path: Path) -> Path:
        git(self.path.parent, "init", "-q", "--bare", "-b", "main", str(path))
        git(self.path, "remote", "add", "origin", str(path))
        self.push()
        return path

    def push(self, *, force: bool = False) -> None:
        git(self.path, "push", "-q", *(["--force"] if force else []), "origin", "HEAD:main")


# A bound against a hang, never an expected duration: the waits below return as soon as their
# condition holds and fail at once when the daemon exits or refuses what they wait for, so only a
# daemon that is stuck ever reaches it. Fixed 20 s bounds on how long a start or a first reconcile
# takes failed on a machine at load 10-12 (a daemon's imports, the worker's forkserver, a worker
# at nice +10 on a busy CPU), while nothing was wrong.
HANG = 300.0


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 20.0, every: float = 0.02) -> Any:
    """Poll `predicate` until truthy; fail naming `what` after a bound (never a timing assertion)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


def http_get(url: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def http_post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class DaemonProcess:
    """`netboot-reconcile run` as a child process on 127.0.0.1 ephemeral ports."""

    def __init__(self, repo: str, state_dir: Path, extra: Sequence[str] = (), port: int | None = None,
                 *, dhcp: bool = False, dhcp_interface: str | None = "lo") -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir = state_dir
        # --trust-any-client: `ipxe()` reads node-1's script from 127.0.0.1 to see which revision is
        # served, and node-1's reserved address (10.10.10.201) is not one a loopback client can have.
        # Who gets a node's script is tested in test_http_boot.py and test_results.py.
        # `dhcp`: the embedded DHCP server on, bound to the loopback interface on an ephemeral port.
        # `dhcp_interface=None`: no --dhcp-interface, netboot.yaml's dhcp.interface decides.
        self.dhcp_port = free_port(socket.SOCK_DGRAM) if dhcp else 0
        dhcp_args = ["--dhcp-listen", f"127.0.0.1:{self.dhcp_port}"] if dhcp else ["--no-dhcp"]
        if dhcp and dhcp_interface is not None:
            dhcp_args += ["--dhcp-interface", dhcp_interface]
        self.args = [
            sys.executable, "-m", "reconciler", "run", "--repo", repo, "--state-dir", str(state_dir),
            "--http-listen", f"127.0.0.1:{self.port}", *dhcp_args, "--no-tftp", "--trust-any-client",
            "--age-identity", str(DEMO_IDENTITY), *extra,
        ]
        self.log_path = state_dir.parent / f"daemon-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> DaemonProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it)
        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait:
            wait_for(lambda: self.status() is not None or self.proc is None or self.proc.poll() is not None,
                     "the daemon's /status", timeout=HANG)
            assert self.proc.poll() is None, self.log()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self) -> dict[str, Any] | None:
        code, body = http_get(self.url + "/status", timeout=2)
        return json.loads(body) if code == 200 else None

    def status_doc(self) -> dict[str, Any]:
        """The /status document; fails the test when /status does not answer 200."""
        status = self.status()
        assert status is not None, "/status did not answer 200"
        return status

    def served_revision(self) -> str | None:
        status = self.status()
        return None if status is None else status.get("last_applied_revision")

    def ipxe(self, mac: str = NODE1_MAC) -> str:
        code, body = http_get(f"{self.url}/ipxe?mac={mac}")
        return body.decode() if code == 200 else ""

    def alive(self) -> None:
        """Fail now, with its log, if the daemon has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"the daemon exited ({self.proc.returncode})\n{self.log()[-3000:]}")

    def wait_served(self, revision: str, timeout: float = HANG) -> None:
        """Until /ipxe serves `revision`; fails at once when the daemon exits or refused it."""
        def served() -> bool:
            self.alive()
            if revision in self.ipxe():
                return True
            status = self.status()
            if status is not None and status.get("last_attempted_revision") == revision \
                    and any(c.get("type") == "Stalled" for c in status.get("conditions", ())):
                pytest.fail(f"{revision[:12]} was refused: {status.get('message')} {status.get('findings')}")
            return False

        wait_for(served, f"/ipxe to serve {revision[:12]}\n{self.log()[-3000:]}", timeout=timeout)

    def wait_persisted(self, revision: str, timeout: float = HANG) -> None:
        """Until `current` on disk names `revision` (it is served first, written after)."""
        def persisted() -> bool:
            self.alive()
            return (self.status() or {}).get("persisted_revision") == revision

        wait_for(persisted, f"{revision[:12]} written to disk\n{self.log()[-3000:]}", timeout=timeout)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = HANG) -> int:
        """SIGTERM, then its exit code (killed, -9, only if it has not exited within `timeout`)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGQUIT)  # every thread's stack to the log: where it hung
            time.sleep(1)
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@contextmanager
def serving_files(work: Path, port: int, files: Mapping[str, str], message: str,
                  mac: str) -> Iterator[tuple[DaemonProcess, str]]:
    """A git repository `work/repo` holding `files` in one commit, served by a daemon (HTTP on `port`,
    state in `work/state`) once `/ipxe?mac=<mac>` carries that commit; (the daemon, the commit)."""
    repo = work / "repo"
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    head = git(repo, "rev-parse", "HEAD")
    proc = DaemonProcess(str(repo), work / "state", port=port).start()
    try:
        wait_for(lambda: head in proc.ipxe(mac), f"/ipxe to serve {head[:12]}\n{proc.log()[-3000:]}", timeout=60)
        yield proc, head
    finally:
        proc.stop()
