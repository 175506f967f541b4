"""A Debian package of another suite, downloaded from Debian's archive and unpacked once into tests/peers/.cache/.

Debian carries cloud-init from 20.4.1 (bullseye, the Ubuntu 20.04 era) to today's release (sid):
the peers the tests run beside the installed bookworm package. Neither PyPI nor any other
registry reachable here publishes cloud-init, so Debian's archive is where the other releases
come from. The machine's apt configuration is left alone: each suite gets a private apt
configuration (its own sources list, lists and cache under .cache/apt-<suite>/, the archive URI
taken from the machine's own Debian sources), `apt-get download` fetches the .deb, and
`dpkg -x` unpacks it into a directory keyed by the package's version. A download holds
`.cache/.lock` (flock): pytest-xdist workers asking at once would collide on apt's lists lock.
Callers: tests/peers/cloud_init.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support import cache_lock

CACHE = Path(__file__).resolve().parent / ".cache"
DEFAULT_ARCHIVE = "http://deb.debian.org/debian"
SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))


def archive_uri() -> str:
    """The Debian archive this machine installs from (not its security archive)."""
    for path in SOURCES:
        try:
            text = path.read_text()
        except OSError:
            continue
        uris: list[str] = re.findall(r"^URIs:\s*(\S+)", text, re.MULTILINE)
        uris += re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.MULTILINE)
        for uri in uris:
            if "security" not in uri:
                return uri.rstrip("/")
    return DEFAULT_ARCHIVE


def _apt(suite: str) -> list[str]:
    base = CACHE / f"apt-{suite}"
    (base / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (base / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (base / "sources.list").write_text(f"deb {archive_uri()} {suite} main\n")
    status = base / "status"
    status.touch()
    return ["-o", f"Dir::Etc::sourcelist={base / 'sources.list'}", "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State::Lists={base / 'lists'}", "-o", f"Dir::Cache={base / 'cache'}",
            "-o", f"Dir::State::status={status}"]


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:2])} ... failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}\n"
                    "the tests take other cloud-init releases from Debian's archive (apt-get download)")
    return proc.stdout


def unpacked(suite: str, package: str) -> tuple[Path, str]:
    """`package` of Debian `suite` unpacked (`dpkg -x`): its root directory and its version."""
    for tool in ("apt-get", "apt-cache", "dpkg"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: the tests need a Debian machine's apt and dpkg")
    marker = CACHE / f"{package}-{suite}.version"
    done = _cached(package, marker)
    if done is not None:
        return done
    with cache_lock(CACHE):
        return _cached(package, marker) or _download(suite, package, marker)


def _cached(package: str, marker: Path) -> tuple[Path, str] | None:
    if marker.exists():
        version = marker.read_text().strip()
        root = CACHE / f"{package}-{version}"
        if version and root.is_dir():
            return root, version
    return None


def _download(suite: str, package: str, marker: Path) -> tuple[Path, str]:
    options = _apt(suite)
    _run(["apt-get", "-q", *options, "update"])
    policy = _run(["apt-cache", *options, "policy", package])
    found = re.search(r"Candidate:\s*(\S+)", policy)
    if found is None or found.group(1) == "(none)":
        pytest.fail(f"Debian {suite} has no package {package}:\n{policy}")
    version = found.group(1)
    root = CACHE / f"{package}-{version}"
    if not root.is_dir():
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            _run(["apt-get", "-q", *options, "download", f"{package}={version}"], cwd=Path(tmp))
            debs = sorted(Path(tmp).glob("*.deb"))
            if len(debs) != 1:
                pytest.fail(f"apt-get download {package}={version} left {debs}")
            _run(["dpkg", "-x", str(debs[0]), f"{tmp}/root"])
            Path(f"{tmp}/root").rename(root)
    marker.write_text(version + "\n")
    return root, version
