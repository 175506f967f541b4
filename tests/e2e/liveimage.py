"""A real Debian live system for the e2e tests: kernel, initrd and a squashfs root running cloud-init.

Booted the way Ubuntu's live installer boots: kernel + initrd over HTTP, then live-boot's
`boot=live fetch=<url>` downloads the squashfs root into RAM and mounts it under an overlay;
systemd starts Debian's own cloud-init (bookworm: 22.4.x), which reads the NoCloud seed named
on the kernel command line.

Built with `mmdebstrap` from this machine's own apt sources (`/etc/apt/sources.list` and the
active files in `/etc/apt/sources.list.d/`): the kernel package's install trigger builds the
initramfs with live-boot's hooks (HTTP fetch, squashfs, overlay), so nothing is assembled by
hand; `mksquashfs -comp zstd -e boot` makes the root. The three artifacts are cached in
`tests/e2e/.cache/live-<key>/`, the key a digest of the recipe and the apt candidate versions of
the packages named in it, so only the first run on a machine (or after a package update) pays
for the build (about 1-2 minutes of mmdebstrap and mksquashfs on 2 CPUs).

Caller: `tests/e2e/conftest.py` (`build_live_image()`); `python -m tests.e2e.liveimage` builds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.assets import CACHE, AssetError
from tests.support import cache_lock

SUITE = "bookworm"
PACKAGES = (
    "linux-image-cloud-amd64", "live-boot", "systemd-sysv", "cloud-init",
    "ifupdown", "isc-dhcp-client", "curl", "ca-certificates",
)
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
RECIPE = "mmdebstrap --variant=minbase; cloud-init always enabled; mksquashfs -comp zstd -e boot; v2"


@dataclass(frozen=True)
class LiveImage:
    kernel: Path
    initrd: Path
    root: Path  # filesystem.squashfs
    versions: dict[str, str]  # what was installed in the image, package -> version


def apt_sources() -> list[Path]:
    """This machine's active apt source files (what mmdebstrap pastes into the image's sources)."""
    files: list[Path] = []
    single, directory = APT_SOURCES
    if single.is_file() and re.search(r"^\s*deb\s", single.read_text(), re.M):
        files.append(single)
    if directory.is_dir():
        files += sorted(p for p in directory.iterdir() if p.suffix in (".list", ".sources") and p.is_file())
    if not files:
        raise AssetError("no apt sources found in /etc/apt/sources.list or /etc/apt/sources.list.d/*.sources")
    return files


def candidate_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """`apt-cache policy`'s candidate version of each package (raises if one has none)."""
    proc = subprocess.run(["apt-cache", "policy", *packages], capture_output=True, text=True, timeout=60,
                          check=False)
    versions: dict[str, str] = {}
    current = ""
    for line in proc.stdout.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = line[:-1]
        elif line.strip().startswith("Candidate:") and current:
            versions[current] = line.split(":", 1)[1].strip()
    missing = [p for p in packages if versions.get(p) in (None, "(none)")]
    if missing:
        raise AssetError(f"apt-cache policy knows no candidate for {', '.join(missing)}: run apt-get update")
    return versions


def cache_key(versions: dict[str, str]) -> str:
    h = hashlib.sha256(RECIPE.encode())
    h.update(json.dumps(sorted(versions.items())).encode())
    return h.hexdigest()[:16]


def _run(*args: str, timeout: float = 1200) -> None:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise AssetError(f"{args[0]} not found: apt-get install {_PACKAGE_OF.get(args[0], args[0])}") from exc
    if proc.returncode != 0:
        raise AssetError(f"{' '.join(args[:3])} ... exited {proc.returncode}:\n{(proc.stderr or proc.stdout)[-3000:]}")


_PACKAGE_OF = {"mmdebstrap": "mmdebstrap", "mksquashfs": "squashfs-tools"}


def _installed(root: Path) -> dict[str, str]:
    proc = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", *PACKAGES],
                          capture_output=True, text=True, timeout=60, check=False)
    return dict(line.split("\t", 1) for line in proc.stdout.splitlines() if "\t" in line)


def build_live_image(cache: Path = CACHE) -> LiveImage:
    """Build (or reuse) vmlinuz, initrd.img and filesystem.squashfs; raises AssetError naming what failed."""
    for tool in ("mmdebstrap", "mksquashfs"):
        if shutil.which(tool) is None:
            raise AssetError(f"{tool} not found: apt-get install {_PACKAGE_OF[tool]} (scripts/test.sh installs it)")
    out = cache / f"live-{cache_key(candidate_versions())}"
    manifest = out / "manifest.json"
    if manifest.exists():
        return _image(out)
    with cache_lock(cache):
        if not manifest.exists():  # another process built it while we waited
            _build(cache, out)
    return _image(out)


def _build(cache: Path, out: Path) -> None:
    for stale in cache.glob("live-*"):
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="build-live-") as tmp:
        work = Path(tmp)
        root = work / "root"
        _run("mmdebstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root),
             *map(str, apt_sources()))
        enable_cloud_init(root)
        kernels = sorted((root / "boot").glob("vmlinuz-*"))
        initrds = sorted((root / "boot").glob("initrd.img-*"))
        if not kernels or not initrds:
            raise AssetError(f"mmdebstrap left no /boot/vmlinuz-* or /boot/initrd.img-* in {root}")
        staged = work / "out"
        staged.mkdir()
        shutil.copyfile(kernels[-1], staged / "vmlinuz")
        shutil.copyfile(initrds[-1], staged / "initrd.img")
        _run("mksquashfs", str(root), str(staged / "filesystem.squashfs"), "-comp", "zstd", "-e", "boot",
             "-noappend", "-quiet")
        (staged / "manifest.json").write_text(json.dumps({"installed": _installed(root), "recipe": RECIPE}))
        os.replace(staged, out)


def enable_cloud_init(root: Path) -> None:
    """Make cloud-init run at every boot of the image, whatever its systemd generator decides.

    Debian's cloud-init is wanted by multi-user.target only through its systemd generator, which
    runs ds-identify; systemd kills generators that run past their time-out. With 8 TCG guests on
    2 CPUs (bench/boot_storm.py --image live --sizes 8) one guest in 8 reached multi-user.target
    with no cloud-init unit run at all, on either stack. This image is for proving what the
    server hands out, so it does not search: ds-identify's policy `enabled` (it exits at once and
    writes nothing), NoCloud first in the datasource list, and cloud-init.target wanted statically.
    """
    (root / "etc/cloud/ds-identify.cfg").write_text("policy: enabled\n")
    (root / "etc/cloud/cloud.cfg.d/05_e2e_datasource.cfg").write_text("datasource_list: [NoCloud, None]\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "cloud-init.target"
    link.unlink(missing_ok=True)
    link.symlink_to("/lib/systemd/system/cloud-init.target")


def _image(out: Path) -> LiveImage:
    doc = json.loads((out / "manifest.json").read_text())
    return LiveImage(out / "vmlinuz", out / "initrd.img", out / "filesystem.squashfs", dict(doc["installed"]))


def install_live_into(image: LiveImage, assets_dir: Path, prefix: str = "live") -> dict[str, str]:
    """Hard-link (or copy) the image into `assets_dir/<prefix>/`; {name: /assets/... path}."""
    target = assets_dir / prefix
    target.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    for src in (image.kernel, image.initrd, image.root):
        dst = target / src.name
        if not dst.exists():
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        paths[src.name] = f"/assets/{prefix}/{src.name}"
    return paths


if __name__ == "__main__":
    built = build_live_image()
    for path in (built.kernel, built.initrd, built.root):
        print(path, path.stat().st_size)
    print(built.versions)
