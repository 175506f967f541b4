"""Many sites from one repository (issue 26 point 3), through the real CLI and real daemons: a
two-site git repository validated, rendered per site, and served by two daemons on loopback,
each with --site, each serving only its own nodes and its own DHCP configuration."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

from tests import repo_builder
from tests.integration.daemon_support import ROOT, DaemonProcess, git, http_get, wait_for
from tests.pgcluster import PgCluster

PARIS_NODE, LYON_NODE = "52:54:00:aa:bb:01", "52:54:00:aa:bb:03"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


def two_site_repo(path: Path, edits: dict[str, str | None] | None = None) -> str:
    repo_builder.write(path, repo_builder.two_sites(edits))
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "two sites")
    return git(path, "rev-parse", "HEAD")


def served(daemon: DaemonProcess, revision: str) -> bool:
    return daemon.served_revision() == revision


def test_validate_checks_every_site_and_names_file_line_and_site(tmp_path: Path) -> None:
    two_site_repo(tmp_path / "ok")
    done = cli("validate", str(tmp_path / "ok"))
    assert done.returncode == 0, done.stdout + done.stderr
    repo_builder.write(tmp_path / "bad", repo_builder.two_sites(
        {"nodes/node-3.yaml": "mac: 52:54:00:aa:bb:03\nprofile: install\nsite: lyn\n"}))
    done = cli("validate", str(tmp_path / "bad"))
    assert done.returncode == 1
    assert "nodes/node-3.yaml:3:" in done.stdout and "unknown-site" in done.stdout
    assert "did you mean 'lyon'?" in done.stdout


def test_render_writes_one_site_or_each_site_in_its_directory(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    two_site_repo(repo)
    done = cli("render", str(repo), "--site", "lyon", "--out", str(tmp_path / "lyon"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "lyon" / "ipxe" / "node-3.ipxe").is_file()
    assert not (tmp_path / "lyon" / "ipxe" / "node-1.ipxe").exists()
    assert "10.20.0.0" in (tmp_path / "lyon" / "dhcpd.conf").read_text()

    done = cli("render", str(repo), "--out", str(tmp_path / "all"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["lyon", "paris"]
    assert (tmp_path / "all" / "paris" / "ipxe" / "node-1.ipxe").is_file()
    assert "10.10.10.0" in (tmp_path / "all" / "paris" / "dhcpd.conf").read_text()
    assert "10.20.0.0" not in (tmp_path / "all" / "paris" / "dhcpd.conf").read_text()

    done = cli("render", str(repo), "--site", "nantes", "--out", str(tmp_path / "x"))
    assert done.returncode == 2
    assert "--site nantes" in done.stderr and "sites: lyon, paris" in done.stderr


def test_two_daemons_each_serve_only_their_site(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    head = two_site_repo(repo)
    paris = DaemonProcess(str(repo), tmp_path / "paris", ["--site", "paris", "--interval", "3600"])
    lyon = DaemonProcess(str(repo), tmp_path / "lyon", ["--site", "lyon", "--interval", "3600"])
    try:
        paris.start()
        lyon.start()
        for daemon in (paris, lyon):
            wait_for(functools.partial(served, daemon, head), f"{head[:12]} applied\n{daemon.log()[-2000:]}",
                     timeout=90)
        # each its own nodes, with its own server settings in every URL
        assert "http://10.10.10.12/" in paris.ipxe(PARIS_NODE) and "vmlinuz" in paris.ipxe(PARIS_NODE)
        assert "http://10.20.0.2:8080/" in lyon.ipxe(LYON_NODE) and "vmlinuz" in lyon.ipxe(LYON_NODE)
        # the other site's node is a machine this site does not know: the default group (local disk)
        assert "vmlinuz" not in lyon.ipxe(PARIS_NODE)
        assert "vmlinuz" not in paris.ipxe(LYON_NODE)
        assert http_get(f"{lyon.url}/cloud-init/{PARIS_NODE}/user-data")[0] == 404
        # its own DHCP configuration
        assert paris.status_doc()["site"] == "paris" and lyon.status_doc()["site"] == "lyon"
        assert "site:       lyon" in cli("status", "--url", lyon.url).stdout
        paris.wait_persisted(head)  # served first, then written
        lyon.wait_persisted(head)
        paris_conf = (tmp_path / "paris" / "current" / "dhcpd.conf").read_text()
        lyon_conf = (tmp_path / "lyon" / "current" / "dhcpd.conf").read_text()
        assert "10.10.10.0" in paris_conf and "10.20.0.0" not in paris_conf and LYON_NODE not in paris_conf
        assert "10.20.0.0" in lyon_conf and PARIS_NODE not in lyon_conf
    finally:
        assert paris.stop() == 0, paris.log()
        assert lyon.stop() == 0, lyon.log()


def test_a_site_the_repository_does_not_declare_exits_2_naming_those_it_does(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    two_site_repo(repo)
    for extra, words in ((["--site", "nantes"], "--site nantes: site 'nantes' is not declared in netboot.yaml "
                                                "(sites: lyon, paris)"),
                         ([], "netboot.yaml declares sites lyon, paris: a daemon serves one of them (--site NAME)")):
        daemon = DaemonProcess(str(repo), tmp_path / f"state{len(extra)}", extra).start(wait=False)
        assert daemon.proc is not None
        code = daemon.proc.wait(90)
        assert code == 2, daemon.log()
        assert words in daemon.log()
        daemon.proc = None


def test_two_sites_sharing_a_store_show_all_sites_or_one(tmp_path: Path, pg_cluster: PgCluster) -> None:
    repo = tmp_path / "repo"
    head = two_site_repo(repo)
    url = pg_cluster.create_database()
    paris = DaemonProcess(str(repo), tmp_path / "paris", ["--site", "paris", "--store", url, "--instance", "paris-a"])
    lyon = DaemonProcess(str(repo), tmp_path / "lyon", ["--site", "lyon", "--store", url, "--instance", "lyon-a"])
    try:
        paris.start()
        lyon.start()
        for daemon in (paris, lyon):
            wait_for(functools.partial(served, daemon, head), f"{head[:12]} applied\n{daemon.log()[-2000:]}",
                     timeout=90)
        assert "vmlinuz" in paris.ipxe(PARIS_NODE) and "vmlinuz" in lyon.ipxe(LYON_NODE)  # a boot step each
        wait_for(lambda: len(json.loads(cli("results", "--store", url, "--format", "json").stdout or "{}")
                             .get("nodes", [])) == 3, "both sites' nodes in the shared store")

        every = json.loads(cli("results", "--store", url, "--format", "json").stdout)
        assert sorted(n["node"] for n in every["commits"][0]["nodes"]) == ["node-1", "node-2", "node-3"]
        done = cli("results", "--store", url, "--site", "lyon", "--format", "json")
        assert done.returncode == 0, done.stderr
        only = json.loads(done.stdout)
        assert [n["node"] for n in only["commits"][0]["nodes"]] == ["node-3"] and only["site"] == "lyon"
        assert [n["node"] for n in only["nodes"]] == ["node-3"]
        done = cli("results", "--store", url, "--site", "nantes")
        assert done.returncode == 2 and "sites: lyon, paris" in done.stderr

        # either instance's dashboard shows every site, or one, with a link to each
        code, page = http_get(f"{paris.url}/ui/fleet")
        assert code == 200 and all(n in page.decode() for n in ("node-1", "node-3", 'href="?site=lyon"'))
        code, page = http_get(f"{paris.url}/ui/fleet?site=lyon")
        assert code == 200 and "node-3" in page.decode() and "node-1" not in page.decode()
        code, body = http_get(f"{paris.url}/api/nodes?site=paris")
        assert sorted(n["node"] for n in json.loads(body)["nodes"]) == ["node-1", "node-2"]
        sites = {i["name"]: i["site"] for i in paris.status_doc()["instances"]}
        assert sites == {"lyon-a": "lyon", "paris-a": "paris"}
    finally:
        assert paris.stop() == 0, paris.log()
        assert lyon.stop() == 0, lyon.log()


def test_a_state_dir_served_for_one_site_serves_the_other_after_a_restart_with_its_site(tmp_path: Path) -> None:
    """The generation on disk was rendered for --site paris; started again with --site lyon on the
    same commit (nothing new to reconcile), the daemon renders it again for lyon before serving."""
    repo = tmp_path / "repo"
    head = two_site_repo(repo)
    daemon = DaemonProcess(str(repo), tmp_path / "state", ["--site", "paris", "--interval", "3600"])
    try:
        daemon.start()
        wait_for(functools.partial(served, daemon, head), f"{head[:12]} applied\n{daemon.log()[-2000:]}", timeout=90)
        assert "vmlinuz" in daemon.ipxe(PARIS_NODE)
        assert daemon.stop() == 0
        daemon.args = [a if a != "paris" else "lyon" for a in daemon.args]
        daemon.start()
        wait_for(functools.partial(served, daemon, head), f"{head[:12]} served\n{daemon.log()[-2000:]}", timeout=90)
        assert "vmlinuz" in daemon.ipxe(LYON_NODE) and "http://10.20.0.2:8080/" in daemon.ipxe(LYON_NODE)
        assert "vmlinuz" not in daemon.ipxe(PARIS_NODE)
        assert "10.20.0.0" in (tmp_path / "state" / "current" / "dhcpd.conf").read_text()
        assert "for another --site" in daemon.log()
    finally:
        assert daemon.stop() == 0, daemon.log()
