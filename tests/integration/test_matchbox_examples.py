"""matchbox's own examples, committed as they are, validate and serve as under matchbox.

The example data directories (tests/fixtures/matchbox/examples, copied from poseidon/matchbox
with their origin in the README there) are committed to a real git repository each, with the one
file our format needs (`netboot.yaml`), and served by a real daemon process; the client is
urllib, asking what matchbox's own clients ask: iPXE (`/ipxe?uuid=..&mac=..`, matchbox's
bootstrap labels), Ignition (`/ignition?uuid=..&mac=..`, the URL the examples' kernel args
give), the Flatcar installer (`/ignition?os=installed`, from flatcar-install.ign), `/metadata`.
The expected answers are matchbox's: matchbox/http/ignition.go serves `.ign` files as
committed with Content-Type application/json; matchbox/http/ipxe.go writes the profile's args
as given (so the Flatcar `initrd=` argument appears once); matchbox/storage/filestore.go reads
group ids from inside the files (flatcar-install's `stage-0` and `stage-1`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.integration.daemon_support import ROOT, DaemonProcess, git, wait_for

EXAMPLES = ROOT / "tests" / "fixtures" / "matchbox" / "examples"
MAC = "52-54-00-a1-9c-ae"
QUERY = f"uuid=a1b2c3d4&mac={MAC}&domain=&hostname=&serial=&arch=x86_64"
SITE = """\
server:
  address: 127.0.0.1
  http_port: 8080
dhcp:
  mode: off
"""


def _repo(tmp_path: Path, example: str) -> Path:
    """A git repository holding one matchbox data directory as committed, plus netboot.yaml."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "groups" / example, repo / "groups")
    shutil.copytree(EXAMPLES / "profiles", repo / "profiles")
    shutil.copytree(EXAMPLES / "ignition", repo / "ignition")
    (repo / "netboot.yaml").write_text(SITE)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"matchbox examples/groups/{example} as committed")
    return repo


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


@pytest.fixture
def serve(tmp_path: Path):  # type: ignore[no-untyped-def]
    daemons: list[DaemonProcess] = []

    def start(example: str) -> DaemonProcess:
        repo = _repo(tmp_path, example)
        daemon = DaemonProcess(str(repo), tmp_path / "state").start()
        daemons.append(daemon)
        head = git(repo, "rev-parse", "HEAD")
        wait_for(lambda: daemon.served_revision() == head, f"the daemon to serve {example}\n{daemon.log()[-3000:]}")
        return daemon

    yield start
    for daemon in daemons:
        daemon.stop()


@pytest.mark.parametrize("example", ["fedora-coreos", "fedora-coreos-install", "flatcar", "flatcar-install"])
def test_matchbox_example_validates(tmp_path: Path, example: str) -> None:
    repo = _repo(tmp_path, example)
    proc = subprocess.run([sys.executable, "-m", "reconciler", "validate", str(repo), "--format", "json"],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    codes = {f["code"] for f in json.loads(proc.stdout)["issues"]}
    # What is left are warnings that say what is not done: the Butane configs (not referenced by
    # these profiles) and, for flatcar-install, the group ids that differ from their file names.
    assert codes <= {"ignition-butane", "group-id-differs"}, proc.stdout


def test_fedora_coreos_boots_and_gets_its_ignition(serve) -> None:  # type: ignore[no-untyped-def]
    daemon = serve("fedora-coreos")
    status, _, script = _get(f"{daemon.url}/ipxe?{QUERY}")
    assert status == 200, script
    kernel = next(line for line in script.decode().splitlines() if line.startswith("kernel "))
    assert "ignition.config.url=http://matchbox.example.com:8080/ignition?uuid=${uuid}&mac=${mac:hexhyp}" in kernel
    status, ctype, body = _get(f"{daemon.url}/ignition?{QUERY}")
    assert (status, ctype) == (200, "application/json")
    assert body == (EXAMPLES / "ignition" / "fedora-coreos.ign").read_bytes()


def test_flatcar_kernel_line_carries_the_initrd_argument_once(serve) -> None:  # type: ignore[no-untyped-def]
    daemon = serve("flatcar")
    status, _, script = _get(f"{daemon.url}/ipxe?{QUERY}")
    assert status == 200, script
    kernel = next(line for line in script.decode().splitlines() if line.startswith("kernel "))
    assert kernel.split(" && ")[0].split().count("initrd=flatcar_production_pxe_image.cpio.gz") == 1
    status, ctype, body = _get(f"{daemon.url}/ignition?{QUERY}")
    assert (status, ctype, body) == (200, "application/json", (EXAMPLES / "ignition" / "flatcar.ign").read_bytes())


def test_flatcar_install_stages_are_selected_by_the_groups_own_ids(serve) -> None:  # type: ignore[no-untyped-def]
    """flatcar-install's stage-0 (install.json, the default group) installs; the installer then
    asks `/ignition?os=installed` (flatcar-install.ign) and gets stage-1's (flatcar.json) config."""
    daemon = serve("flatcar-install")
    status, _, body = _get(f"{daemon.url}/ignition?{QUERY}")
    assert status == 200 and body == (EXAMPLES / "ignition" / "flatcar-install.ign").read_bytes()
    status, _, body = _get(f"{daemon.url}/ignition?os=installed")
    assert status == 200 and body == (EXAMPLES / "ignition" / "flatcar.ign").read_bytes()
    status, _, env = _get(f"{daemon.url}/metadata?os=installed")
    assert status == 200 and "OS=installed" in env.decode().splitlines()
    status, _, generic = _get(f"{daemon.url}/generic?{QUERY}")
    assert status == 404 and b"no generic template" in generic  # matchbox 404s a profile without generic_id
