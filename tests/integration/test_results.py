"""Boot results end to end on 127.0.0.1: the real daemon wiring (`commands.run._start_servers`), a real
git repository, real SQLite, HTTP clients bound to the nodes' own loopback addresses (127.0.0.21, ...),
and `netboot-reconcile results` reading the store.

Nodes sit in a 127.0.0.0/24 subnet, so a client bound to 127.0.0.21 IS node-1's reserved address
and one bound to 127.0.0.99 is some other machine.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler import cli
from reconciler.commands import run as run_command
from reconciler.core import template
from reconciler.core.model import BootEvent
from reconciler.core.render import render_generation
from reconciler.daemon import Daemon, Result
from reconciler.protocol import dhcp as dhcp_codec
from reconciler.settings import Settings
from tests.dhcp_fixtures import client_message, pxe_options
from tests.integration.daemon_support import DaemonProcess, git, http_get, wait_for
from tests.repo_builder import BASE
from tests.support import require_tool
from tests.unit.test_outcomes import AUTOINSTALL

SECRET = b"0123456789abcdef0123456789abcdef"
MACS = {f"node-{i}": f"52:54:00:aa:bb:0{i}" for i in range(1, 5)}
IPS = {f"node-{i}": f"127.0.0.2{i}" for i in range(1, 5)}
STRANGER = "127.0.0.99"

NETBOOT_YAML = """\
server: {address: 127.0.0.1, http_port: 80}
dhcp:
  mode: full
  subnets:
    - subnet: 127.0.0.0/24
      pool: [127.0.0.100, 127.0.0.200]
      routers: [127.0.0.254]
"""
PROFILE = """\
name: Install Ubuntu (install once)
boot:
  kernel: /assets/vmlinuz
  initrd: [/assets/initrd]
  args: [autoinstall, ip=dhcp, "ds=nocloud;s={{ cloud_init_url }};dsmode=net"]
cloud_init: autoinstall
install_once: true
"""
CLOUD_INIT = BASE["cloud-init/autoinstall.yaml"]  # the standard autoinstall seed


def node_yaml(name: str, reinstall: int = 0) -> str:
    return f"mac: {MACS[name]}\nip: {IPS[name]}\nprofile: install\nreinstall: {reinstall}\n"


def make_repo(path: Path) -> Path:
    files = {"netboot.yaml": NETBOOT_YAML, "profiles/install.yaml": PROFILE, "cloud-init/autoinstall.yaml": CLOUD_INIT}
    files.update({f"nodes/{n}.yaml": node_yaml(n) for n in MACS})
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    git(path, "init", "-q", "-b", "main")
    commit(path, "initial")
    return path


def commit(path: Path, message: str) -> str:
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", message)
    return git(path, "rev-parse", "HEAD")


def make_assets(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "vmlinuz").write_bytes(b"kernel" * 100)
    (path / "initrd").write_bytes(b"initrd" * 100)
    return path


@dataclass
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(port: int, method: str, path: str, *, source: str = "127.0.0.1", body: bytes | None = None,
            headers: Mapping[str, str] | None = None) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return Reply(resp.status, resp.read())
    finally:
        conn.close()


def post_json(port: int, path: str, doc: Mapping[str, Any], source: str, **headers: str) -> Reply:
    return request(port, "POST", path, source=source, body=json.dumps(doc).encode(),
                   headers={"Content-Type": "application/json", **headers})


def simulate_netboot(port: int, node: str, sha: str) -> None:
    """The requests iPXE and cloud-init make, in their order, from the node's own address."""
    mac, src = MACS[node], IPS[node]
    hyphen = mac.replace(":", "-")
    steps = [
        "/boot.ipxe",
        f"/ipxe?uuid=&mac={hyphen}&domain=&hostname=&serial=&arch=x86_64",
        f"/r/{sha}/assets/vmlinuz",
        f"/r/{sha}/assets/initrd",
        f"/r/{sha}/cloud-init/{mac}/meta-data",
        f"/r/{sha}/cloud-init/{mac}/user-data",
        f"/r/{sha}/cloud-init/{mac}/vendor-data",
    ]
    for path in steps:
        reply = request(port, "GET", path, source=src)
        assert reply.status == 200, (path, reply.status, reply.body[:200])


def autoinstall_events(port: int, node: str, steps: tuple[tuple[str, str, str], ...] = AUTOINSTALL,
                       query: str = "") -> None:
    t0 = time.time()
    for i, (name, kind, result) in enumerate(steps):
        doc: dict[str, Any] = {"name": name, "description": name.rsplit("/", 1)[-1], "event_type": kind,
                               "origin": "curtin", "timestamp": t0 + i, "level": "INFO"}
        if result:
            doc["result"] = result
        reply = post_json(port, f"/report/autoinstall/{MACS[node]}{query}", doc, IPS[node])
        assert reply.status == 200, reply.body


def _where(store: Path | str) -> list[str]:
    """`results` and `diff` arguments reading a state directory's SQLite store, or a PostgreSQL URL."""
    return ["--store", store] if isinstance(store, str) else ["--state-dir", str(store)]


def results_json(store: Path | str, *args: str) -> Any:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["results", *_where(store), "--format", "json", *args])
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue())


def results_text(store: Path | str, *args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["results", *_where(store), *args])
    assert code == 0, out.getvalue()
    return out.getvalue()


def node_entry(doc: Any, sha: str, node: str) -> dict[str, Any]:
    commits = [c for c in doc["commits"] if c["revision"] == sha]
    assert commits, [c["revision"] for c in doc["commits"]]
    entries = [n for n in commits[0]["nodes"] if n["node"] == node]
    assert len(entries) == 1, commits[0]["nodes"]
    entry: dict[str, Any] = entries[0]
    return entry


class Site:
    """An in-process daemon serving the repo over HTTP with the results apps mounted."""

    def __init__(self, tmp: Path, store: str | None = None) -> None:
        self.repo = make_repo(tmp / "repo")
        self.state = tmp / "state"
        # What `results` reads: the state directory, or the PostgreSQL store (--store).
        self.store: Path | str = store if store is not None else self.state
        settings = Settings(repo=str(self.repo), state_dir=self.state, store=store, watch=False, dhcp=False,
                            tftp=False,
                            http_listen=("127.0.0.1", 0), assets_dir=make_assets(tmp / "assets"),
                            report_secret=SECRET, boot_timeout=3600.0)
        self.daemon = Daemon(settings, renderer=lambda s: render_generation(s, report_secret=SECRET))
        self.daemon.open()
        assert self.daemon.reconcile_once() is Result.APPLIED
        run_command._start_servers(self.daemon, settings)
        self.port = self.daemon.servers["http"].server.address[1]
        self.sha = git(self.repo, "rev-parse", "HEAD")

    def get(self, path: str, source: str = "127.0.0.1") -> Reply:
        return request(self.port, "GET", path, source=source)

    def apply(self, files: Mapping[str, str], message: str) -> str:
        for rel, text in files.items():
            (self.repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.repo / rel).write_text(text)
        sha = commit(self.repo, message)
        assert self.daemon.reconcile_once() is Result.APPLIED
        return sha

    def flush(self) -> None:
        assert self.daemon.store is not None and self.daemon.store.flush(5.0)

    def close(self) -> None:
        self.daemon.shutdown()


@pytest.fixture
def site(tmp_path: Path, store_location: str) -> Iterator[Site]:
    """A Site on each engine: the default SQLite store, and PostgreSQL (--store)."""
    s = Site(tmp_path, store=store_location if store_location.startswith("postgresql://") else None)
    try:
        yield s
    finally:
        s.close()


def test_full_simulated_install_succeeds_then_install_once_boots_the_disk_until_reinstall(site: Site) -> None:
    sha = site.sha
    user_data = site.get(f"/r/{sha}/cloud-init/{MACS['node-1']}/user-data", IPS["node-1"]).body.decode()
    token = template.report_token(SECRET, "node-1", sha)
    # the default webhook, with the node's own token, rendered into its autoinstall user-data
    assert f'endpoint: "http://127.0.0.1/report/autoinstall/{MACS["node-1"]}?token={token}"' in user_data

    simulate_netboot(site.port, "node-1", sha)
    site.flush()
    assert node_entry(results_json(site.store), sha, "node-1")["outcome"] == "installing"
    autoinstall_events(site.port, "node-1")
    doc = results_json(site.store)
    entry = node_entry(doc, sha, "node-1")
    assert entry["outcome"] == "succeeded", entry
    stages = [e["stage"] for e in entry["events"]]
    for stage in ("ipxe-bootstrap", "ipxe-script", "kernel", "initrd", "meta-data", "user-data", "autoinstall"):
        assert stage in stages, stages
    assert entry["events"][-1]["detail"]["name"] == "subiquity/Late/run_user_supplied"
    assert doc["commits"][0]["succeeded"] == 1 and doc["commits"][0]["targeted"] == 4
    drift = {n["node"]: n for n in doc["nodes"]}
    assert drift["node-1"]["drift"] is False and drift["node-2"]["last_booted_revision"] is None

    # install once: the next netboot of node-1 boots its disk; node-2 still installs
    script = site.get(f"/ipxe?mac={MACS['node-1']}", IPS["node-1"]).body.decode()
    assert "installed (install_once)" in script and "\nexit\n" in script and "kernel " not in script
    assert "kernel http://127.0.0.1/r/" in site.get(f"/ipxe?mac={MACS['node-2']}", IPS["node-2"]).body.decode()
    grub = site.get(f"/grub?mac={MACS['node-1']}", IPS["node-1"]).body.decode()
    assert "boot from the local disk" in grub
    site.flush()
    assert node_entry(results_json(site.store), sha, "node-1")["outcome"] == "succeeded"  # rebooting keeps it

    # a commit that changes something else keeps the disk boot; bumping `reinstall` installs again
    sha2 = site.apply({"nodes/node-2.yaml": node_yaml("node-2") + "labels: {rack: r2}\n"}, "label node-2")
    assert "installed (install_once)" in site.get(f"/ipxe?mac={MACS['node-1']}", IPS["node-1"]).body.decode()
    sha3 = site.apply({"nodes/node-1.yaml": node_yaml("node-1", reinstall=1)}, "reinstall node-1")
    script = site.get(f"/ipxe?mac={MACS['node-1']}", IPS["node-1"]).body.decode()
    assert f"kernel http://127.0.0.1/r/{sha3}/assets/vmlinuz" in script, script
    assert sha2 != sha3

    text = results_text(site.store, "--commit", sha[:10])
    assert f"commit {sha[:12]}" in text and "node-1" in text and "succeeded" in text


def test_the_text_counts_commits_in_english(site: Site) -> None:
    assert "(1 commit seen)" in results_text(site.store)
    site.apply({"nodes/node-2.yaml": node_yaml("node-2") + "labels: {rack: r2}\n"}, "label node-2")
    assert "(2 commits seen)" in results_text(site.store)


def test_failure_refusal_token_and_timeout(site: Site) -> None:
    sha = site.sha
    # a failure report (the plain one-liner an initramfs sends)
    simulate_netboot(site.port, "node-2", sha)
    reply = post_json(site.port, f"/report/{MACS['node-2']}", {"status": "failure", "message": "no disk"},
                      IPS["node-2"])
    assert reply.status == 200 and reply.json()["revision"] == sha

    # from the wrong address without a token: refused, counted, not recorded
    refused = post_json(site.port, f"/report/{MACS['node-3']}", {"status": "success"}, STRANGER)
    assert refused.status == 403, refused.body
    assert "not the node's address" in refused.json()["error"]
    bad = post_json(site.port, f"/report/{MACS['node-3']}?token=00000000", {"status": "success"}, STRANGER)
    assert bad.status == 403
    unknown = post_json(site.port, "/report/52:54:00:00:00:77", {"status": "success"}, STRANGER)
    assert unknown.status == 404
    # with node-3's token (as rendered into its cloud-init) from anywhere: accepted
    token = template.report_token(SECRET, "node-3", sha)
    ok = post_json(site.port, f"/report/{MACS['node-3']}", {"status": "success", "message": "via token"}, STRANGER,
                   **{"X-Netboot-Token": token})
    assert ok.status == 200 and ok.json()["node"] == "node-3", ok.body
    # cloud-init phone_home (a form) with the token in the query
    phone = request(site.port, "POST", f"/report/phone-home/{MACS['node-3']}?token={token}", source=STRANGER,
                    body=b"instance_id=iid-1&hostname=node-3&pub_key_rsa=ssh-rsa+AAAA",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert phone.status == 200

    # silence: node-4 started booting 90 minutes ago and said nothing since
    assert site.daemon.store is not None
    site.daemon.store.record(BootEvent(time.time() - 5400, "kernel", sha, MACS["node-4"], "node-4", IPS["node-4"],
                                       {"status": 200}))
    site.flush()

    doc = results_json(site.store, "--commit", sha)
    outcomes = {n["node"]: n["outcome"] for n in doc["commits"][0]["nodes"]}
    assert outcomes == {"node-1": "pending", "node-2": "failed", "node-3": "succeeded", "node-4": "timed-out"}
    node2 = node_entry(doc, sha, "node-2")
    assert node2["reason"] == "report failure: no disk"
    assert not any(e["client"] == STRANGER for e in node_entry(doc, sha, "node-1")["events"])
    assert [e["stage"] for e in node_entry(doc, sha, "node-3")["events"]] == ["report", "phone-home"]
    summary = doc["commits"][0]
    assert (summary["booted"], summary["failed"], summary["timed_out"], summary["pending"]) == (3, 1, 1, 1)
    assert results_json(site.store, "--node", "node-2")["commits"][0]["nodes"][0]["node"] == "node-2"

    metrics = site.get("/metrics").body.decode()
    assert 'netboot_reports_refused_total{reason="wrong-address"} 1.0' in metrics
    assert 'netboot_reports_refused_total{reason="bad-token"} 1.0' in metrics
    assert 'netboot_boot_events_total{stage="kernel"} 1.0' in metrics  # node-2's (node-4's was written directly)
    assert 'netboot_boot_outcomes_total{result="failed"} 1.0' in metrics
    assert 'netboot_boot_outcomes_total{result="succeeded"} 1.0' in metrics
    assert 'netboot_boot_outcomes_total{result="timed-out"} 1.0' in metrics


def test_a_stranger_cannot_read_a_nodes_seed_so_cannot_forge_its_report(site: Site) -> None:
    """B4: the token is in the node's user-data; only the node's own address gets that user-data."""
    sha, mac = site.sha, MACS["node-1"]
    token = template.report_token(SECRET, "node-1", sha)
    for path in (f"/r/{sha}/cloud-init/{mac}/user-data", f"/cloud-init/{mac}/user-data",
                 f"/ipxe?mac={mac}", f"/metadata?mac={mac}", f"/grub?mac={mac}"):
        reply = site.get(path, STRANGER)
        assert reply.status == 403, (path, reply.body)
        assert token.encode() not in reply.body
        assert f"has the reserved address {IPS['node-1']}, and this request comes from {STRANGER}" \
            in reply.body.decode()
    # another node's reserved address is refused too; node-1's own address gets it, token and all
    assert site.get(f"/r/{sha}/cloud-init/{mac}/user-data", IPS["node-2"]).status == 403
    own = site.get(f"/r/{sha}/cloud-init/{mac}/user-data", IPS["node-1"])
    assert own.status == 200 and token.encode() in own.body
    site.flush()
    entry = node_entry(results_json(site.store, "--commit", sha), sha, "node-1")
    refused = [e for e in entry["events"] if e["detail"].get("refused")]
    assert len(refused) == 6 and {e["client"] for e in refused} == {STRANGER, IPS["node-2"]}
    assert all(e["detail"]["status"] == 403 and e["detail"]["refused"] == "wrong-client" for e in refused)
    assert entry["outcome"] == "installing"  # refused fetches are in the timeline, not progress


def test_trust_any_client_flag(tmp_path: Path) -> None:
    args = _run_args(["--repo", str(tmp_path), "--state-dir", str(tmp_path / "s")])
    assert run_command.settings_from(args, {}).trust_any_client is False
    args = _run_args(["--repo", str(tmp_path), "--state-dir", str(tmp_path / "s"), "--trust-any-client"])
    assert run_command.settings_from(args, {}).trust_any_client is True


def _run_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    run_command.add_parser(parser.add_subparsers())
    return parser.parse_args(["run", *argv])


def test_uefi_http_boot_binary_is_served_with_default_settings(site: Site) -> None:
    """B5: DHCP hands UEFI HTTP boot <server_url>/assets/ipxe/ipxe.efi; the default --tftp-root has it."""
    debian = Path("/usr/lib/ipxe/ipxe.efi")
    if not debian.exists():
        pytest.fail(f"{debian} not found: apt-get install ipxe (scripts/test.sh installs it)")
    curl = require_tool("curl", "curl")
    url = f"http://127.0.0.1:{site.port}/assets/ipxe/ipxe.efi"
    got = subprocess.run([curl, "-sSf", url], capture_output=True, timeout=60, check=False)
    assert got.returncode == 0, got.stderr
    assert got.stdout == debian.read_bytes()  # through Debian's symlink to /boot/ipxe.efi


def test_api_commits_and_nodes(site: Site) -> None:
    sha = site.sha
    simulate_netboot(site.port, "node-1", sha)
    post_json(site.port, f"/report/{MACS['node-1']}", {"status": "success"}, IPS["node-1"])
    sha2 = site.apply({"nodes/node-2.yaml": node_yaml("node-2", reinstall=3)}, "reinstall node-2")

    listing = site.get("/api/commits").json()
    commits = listing["commits"]
    assert [c["revision"] for c in commits] == [sha2, sha] and listing["total"] == 2
    assert [c["state"] for c in commits] == ["applied", "superseded"]
    assert (commits[0]["subject"], commits[1]["subject"]) == ("reinstall node-2", "initial")
    assert commits[0]["author"] == "Test <test@example.invalid>" and commits[0]["committed"] > 0
    # node-1's plan is the same at sha2: its success carries over; node-2 must install again
    assert commits[1]["succeeded"] == 1 and (commits[0]["succeeded"], commits[0]["pending"]) == (1, 3)
    assert site.get("/api/commits?limit=1&offset=1").json()["commits"][0]["revision"] == sha
    one = site.get(f"/api/commits/{sha[:12]}").json()
    assert one["revision"] == sha and one["reconcile"]["result"] == "applied"
    assert [n["outcome"] for n in one["nodes"] if n["node"] == "node-1"] == ["succeeded"]
    assert site.get("/api/commits/ffffffffff").status == 404
    node = site.get("/api/nodes/node-1").json()
    assert (node["serving_revision"], node["last_booted_revision"], node["drift"]) == (sha2, sha, False)
    assert [p["revisions"] for p in node["plans"]] == [[sha2, sha]]  # one plan, two commits
    assert node["plans"][0]["outcome"] == "succeeded"
    node2 = site.get("/api/nodes/node-2").json()
    assert [p["revision"] for p in node2["plans"]] == [sha2, sha] and node2["drift"] is True
    fleet = site.get("/api/nodes?limit=2").json()
    assert fleet["total"] == 4 and [n["node"] for n in fleet["nodes"]] == ["node-1", "node-2"]
    assert fleet["nodes"][0]["install_seconds"] is not None
    assert site.get("/api/nodes/nobody").status == 404


def reject(site: Site, files: Mapping[str, str], message: str) -> str:
    for rel, text in files.items():
        (site.repo / rel).write_text(text)
    sha = commit(site.repo, message)
    assert site.daemon.reconcile_once() is Result.REJECTED
    return sha


def revert_sequence(site: Site) -> dict[str, str]:
    """node-1 installs; then a comment-only commit, a change of every node's kernel arguments, its
    revert, and an invalid commit. Returns the shas by name."""
    sha = site.sha
    simulate_netboot(site.port, "node-1", sha)
    assert post_json(site.port, f"/report/{MACS['node-1']}", {"status": "success"}, IPS["node-1"]).status == 200
    comment = site.apply({"profiles/install.yaml": "# who installs what\n" + PROFILE}, "comment the profile")
    change = site.apply({"profiles/install.yaml": PROFILE.replace("ip=dhcp", "ip=dhcp, console=ttyS0")},
                        "serial console")
    git(site.repo, "revert", "--no-edit", "HEAD")
    revert = git(site.repo, "rev-parse", "HEAD")
    assert site.daemon.reconcile_once() is Result.APPLIED
    bad = reject(site, {"nodes/node-2.yaml": "mac: 52:54:00:aa:bb:02\nip: 300.1.1.1\nprofile: install\n"},
                 "node-2 typo")
    site.flush()
    return {"first": sha, "comment": comment, "change": change, "revert": revert, "bad": bad}


def test_a_comment_a_revert_and_a_rejected_commit_change_nobodys_state(site: Site) -> None:
    """Issue 24 (fails on the old code: a comment-only commit or a revert turned every node pending and
    drifting; the rejected commit was in no listing; `results` called the applied commit desired)."""
    shas = revert_sequence(site)
    doc = results_json(site.store)
    by = {c["revision"]: c for c in doc["commits"]}
    assert [c["revision"] for c in doc["commits"]] == [shas[k] for k in ("bad", "revert", "change", "comment", "first")]
    assert [by[shas[k]]["state"] for k in ("bad", "revert", "change", "comment", "first")] == [
        "rejected", "applied", "superseded", "superseded", "superseded"]
    outcome = {k: node_entry(doc, shas[k], "node-1")["outcome"] for k in ("first", "comment", "change", "revert")}
    assert outcome == {"first": "succeeded", "comment": "succeeded", "change": "pending", "revert": "succeeded"}
    assert node_entry(doc, shas["revert"], "node-1")["booted_revision"] == shas["first"]
    assert by[shas["bad"]]["nodes"] == [] and by[shas["bad"]]["subject"] == "node-2 typo"
    assert any(f["file"] == "nodes/node-2.yaml" for f in by[shas["bad"]]["findings"]), by[shas["bad"]]
    drift = {n["node"]: n for n in doc["nodes"]}
    assert drift["node-1"]["drift"] is False and drift["node-1"]["last_booted_revision"] == shas["first"]
    assert drift["node-2"]["drift"] is True  # never booted
    # the same words as /status: desired is the newest commit seen (the rejected one), applied the serving one
    status = site.get("/status").json()
    history = {r["revision"]: r["result"] for r in status["reconciles"]}
    # one vocabulary: a commit's state is its latest reconcile's result in /status's history, but
    # for an applied commit since replaced (superseded); no second word for the same thing
    assert all(history[c["revision"]] == c["state"] for c in doc["commits"] if c["state"] != "superseded")
    assert history[shas["bad"]] == "rejected" and history[shas["revert"]] == "applied"
    assert all("reconcile_result" not in c for c in doc["commits"])
    assert (doc["desired_revision"], doc["last_applied_revision"]) == (shas["bad"], shas["revert"])
    assert (status["desired_revision"], status["last_applied_revision"]) == (shas["bad"], shas["revert"])
    text = results_text(site.store)
    assert f"desired {shas['bad'][:12]}  applied {shas['revert'][:12]}" in text
    assert f"commit {shas['bad'][:12]}  rejected  node-2 typo" in text and "nodes/node-2.yaml" in text

    api = site.get("/api/commits").json()
    assert [(c["revision"], c["state"]) for c in api["commits"]] == [
        (c["revision"], c["state"]) for c in doc["commits"]]
    assert (api["desired_revision"], api["last_applied_revision"]) == (shas["bad"], shas["revert"])
    assert {c["revision"]: c.get("succeeded") for c in api["commits"]}[shas["revert"]] == 1
    assert site.get("/api/nodes/node-1").json()["drift"] is False


def test_a_commit_whose_reconcile_failed_is_failed_everywhere_until_applied(site: Site) -> None:
    """Issue 24 point 2, the fourth word: a commit whose reconcile failed for a temporary reason (here
    the state directory refuses the write) is `failed` in /status's history, `results`, /api and
    /ui, with the reason; applied later, it is `applied` and the one before it `superseded`."""
    recycle = site.state / "recycle"
    recycle.rmdir()
    recycle.write_text("not a directory\n")  # the write step opens it as one: ENOTDIR
    (site.repo / "profiles/install.yaml").write_text(PROFILE.replace("ip=dhcp", "ip=dhcp, console=ttyS0"))
    sha = commit(site.repo, "serial console")
    assert site.daemon.reconcile_once() is Result.FAILED
    site.flush()
    newest = results_json(site.store)["commits"][0]
    assert (newest["revision"], newest["state"], newest["nodes"]) == (sha, "failed", [])
    assert newest["reason"].startswith("write: "), newest
    history = {r["revision"]: r["result"] for r in site.get("/status").json()["reconciles"]}
    assert (history[sha], history[site.sha]) == ("failed", "applied")
    api = site.get("/api/commits").json()["commits"]
    assert [(c["revision"], c["state"]) for c in api] == [(sha, "failed"), (site.sha, "applied")]
    page = site.get("/ui/").body.decode()
    assert f'data-revision="{sha}" data-state="failed"' in page and "write: " in page
    assert f"commit {sha[:12]}  failed  serial console" in results_text(site.store)
    recycle.unlink()
    recycle.mkdir()
    assert site.daemon.reconcile_once() is Result.APPLIED
    site.flush()
    assert [(c["revision"], c["state"]) for c in results_json(site.store)["commits"]] == [
        (sha, "applied"), (site.sha, "superseded")]


def diff_json(repo: Path, base: str, head: str, *args: str) -> Any:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["diff", "--repo", str(repo), base, head, "--format", "json", *args])
    assert code == 1, out.getvalue()
    return json.loads(out.getvalue())


def test_diff_with_the_state_dir_says_which_machines_really_installed(site: Site) -> None:
    """Issue 24: `diff --state-dir` (fails on the old code: no such option, and one verdict for all)."""
    sha = site.sha
    simulate_netboot(site.port, "node-1", sha)
    assert post_json(site.port, f"/report/{MACS['node-1']}", {"status": "success"}, IPS["node-1"]).status == 200
    (site.repo / "profiles/install.yaml").write_text(PROFILE.replace("ip=dhcp", "ip=dhcp, console=ttyS0"))
    (site.repo / "nodes/node-3.yaml").write_text(node_yaml("node-3", reinstall=1))
    (site.repo / "nodes/node-2.yaml").write_text(node_yaml("node-2", reinstall=1))
    head = commit(site.repo, "serial console; reinstall node-2 and node-3")
    assert post_json(site.port, f"/report/{MACS['node-3']}", {"status": "success"}, IPS["node-3"]).status == 200

    blind = {n["name"]: n["reinstall"]["verdict"] for n in diff_json(site.repo, sha, head)["nodes"]}
    assert blind == {"node-1": "not-installed-only", "node-2": "will-reinstall", "node-3": "will-reinstall",
                     "node-4": "not-installed-only"}
    doc = diff_json(site.repo, sha, head, *_where(site.store))
    seen = {n["name"]: n["reinstall"]["verdict"] for n in doc["nodes"]}
    assert seen == {"node-1": "installed-keeps-disk",  # installed: bump reinstall to apply
                    "node-2": "first-install",  # never installed: installs at its next netboot
                    "node-3": "will-reinstall",  # installed, counter bumped
                    "node-4": "next-netboot"}  # not installed: gets the change at its next netboot
    assert doc["installs_known"] is True and doc["summary"]["will_reinstall"] == ["node-3"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["diff", "--repo", str(site.repo), sha, head, *_where(site.store)]) == 1
    assert "no: installed, bump `reinstall` to apply" in out.getvalue()
    assert cli.main(["diff", "--repo", str(site.repo), sha, head, "--state-dir", str(site.state / "nope")]) == 2


def test_diff_asks_a_running_daemon_which_machines_really_installed(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 24 point 1: `diff --url` asks a running daemon (its /api/installs) which machines
    reported an install, and gives the verdicts `--state-dir` gives, with no access to the state
    dir (fails on the old code: no --url, no /api/installs)."""
    repo = make_repo(tmp_path / "repo")
    sha = git(repo, "rev-parse", "HEAD")
    state = tmp_path / "state"
    daemon = DaemonProcess(str(repo), state, extra=["--assets-dir", str(make_assets(tmp_path / "a")),
                                                     "--no-watch", "--interval", "3600"])
    daemon.start()
    try:
        daemon.wait_served(sha)
        assert post_json(daemon.port, f"/report/{MACS['node-1']}", {"status": "success"}, IPS["node-1"]).status == 200
        (repo / "profiles/install.yaml").write_text(PROFILE.replace("ip=dhcp", "ip=dhcp, console=ttyS0"))
        (repo / "nodes/node-3.yaml").write_text(node_yaml("node-3", reinstall=1))
        (repo / "nodes/node-2.yaml").write_text(node_yaml("node-2", reinstall=1))
        head = commit(repo, "serial console; reinstall node-2 and node-3")  # not applied: --no-watch
        assert post_json(daemon.port, f"/report/{MACS['node-3']}", {"status": "success"}, IPS["node-3"]).status == 200

        code, body = http_get(daemon.url + "/api/installs")
        assert code == 200 and sorted((i["node"], i["reinstall"], i["revision"]) for i in json.loads(body)["installs"]
                                      ) == [("node-1", 0, sha), ("node-3", 0, sha)]
        by_url = diff_json(repo, sha, head, "--url", daemon.url)
        verdicts = {n["name"]: n["reinstall"]["verdict"] for n in by_url["nodes"]}
        assert verdicts == {"node-1": "installed-keeps-disk",  # installed: bump reinstall to apply
                            "node-2": "first-install",  # never installed: installs at its next netboot
                            "node-3": "will-reinstall",  # installed, counter bumped
                            "node-4": "next-netboot"}  # not installed: gets the change at its next netboot
        assert by_url["installs_known"] is True and by_url["summary"]["will_reinstall"] == ["node-3"]
        by_state = diff_json(repo, sha, head, "--state-dir", str(state))
        assert {n["name"]: n["reinstall"]["verdict"] for n in by_state["nodes"]} == verdicts
        capsys.readouterr()
        assert cli.main(["diff", "--repo", str(repo), sha, head, "--url", daemon.url + "/"]) == 1
        assert "no: installed, bump `reinstall` to apply" in capsys.readouterr().out
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]
    # no daemon there: an error of the command, naming the URL (not verdicts made up without installs)
    assert cli.main(["diff", "--repo", str(repo), sha, head, "--url", daemon.url]) == 2
    err = capsys.readouterr().err
    assert f"--url {daemon.url}: no answer from the daemon" in err, err


def test_an_unknown_machine_that_pxe_boots_in_proxy_mode_is_listed_with_its_vendor_class(tmp_path: Path) -> None:
    """Issue 24: unknown machines listed with MAC, vendor class and the group they would match. In
    proxy mode (or with no pool) an unknown machine's DISCOVER gets no answer; it was recorded
    nowhere, so a new rack PXE-booting against the daemon never showed up (fails on the old code)."""
    repo = make_repo(tmp_path / "repo")
    (repo / "netboot.yaml").write_text(NETBOOT_YAML.replace("mode: full", "mode: proxy"))
    (repo / "groups/default.yaml").parent.mkdir()
    (repo / "groups/default.yaml").write_text("profile: install\n")
    commit(repo, "proxy mode, a default group")
    daemon = DaemonProcess(str(repo), tmp_path / "state", dhcp=True,
                           extra=["--assets-dir", str(make_assets(tmp_path / "a"))])
    daemon.start()
    try:
        daemon.wait_served(git(repo, "rev-parse", "HEAD"))
        stranger = "52:54:00:00:00:77"
        packet = dhcp_codec.encode(client_message(dhcp_codec.DISCOVER, stranger, options=pxe_options(7)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind(("127.0.0.1", 0))
            client.sendto(packet, ("127.0.0.1", daemon.dhcp_port))
            client.settimeout(1.0)
            with pytest.raises(TimeoutError):
                client.recvfrom(2048)  # not answered: unknown_clients is ignore

        def listed() -> list[dict[str, Any]]:
            code, body = http_get(daemon.url + "/api/unknown")
            return [m for m in json.loads(body)["machines"] if m["mac"] == stranger] if code == 200 else []

        wait_for(lambda: bool(listed()), f"{stranger} in /api/unknown\n{daemon.log()[-2000:]}")
        (machine,) = listed()
        assert machine["vendor_class"] == "PXEClient:Arch:00007:UNDI:003000" and machine["last_stage"] == "dhcp-ignored"
        assert machine["group"] == "default (not served: unknown_clients: ignore)"
        code, page = http_get(daemon.url + "/ui/")
        row = page.decode().split(f'data-mac="{stranger}"', 1)[1].split("</tr>", 1)[0]
        assert code == 200 and "PXEClient:Arch:00007" in row and "default" in row
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]


def test_an_acknowledged_report_survives_kill_9(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    sha = git(repo, "rev-parse", "HEAD")
    daemon = DaemonProcess(str(repo), tmp_path / "state", extra=["--assets-dir", str(make_assets(tmp_path / "a"))])
    daemon.start()
    try:
        daemon.wait_served(sha)
        reply = post_json(daemon.port, f"/report/{MACS['node-1']}", {"status": "success", "message": "acked"},
                          IPS["node-1"])
        assert reply.status == 200, daemon.log()
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait()
        daemon.proc = None
    finally:
        daemon.kill()
    assert (tmp_path / "state" / "report-secret").stat().st_mode & 0o777 == 0o600
    entry = node_entry(results_json(tmp_path / "state"), sha, "node-1")
    assert entry["outcome"] == "succeeded"
    assert entry["events"][-1]["detail"]["message"] == "acked"


def test_results_without_a_store_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["results", "--state-dir", str(tmp_path)]) == 2
    assert "no results store" in capsys.readouterr().err
