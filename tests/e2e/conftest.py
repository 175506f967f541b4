"""Fixtures of the e2e tests: tools present, boot assets built, one lab + git repo + daemon per module.

`boot_assets` (session): the cached kernel + busybox initramfs (`tests/e2e/assets.py`).
`live_image` (session): the cached Debian live system with cloud-init (`tests/e2e/liveimage.py`).
`site` (module): a network namespace with a bridge (10.10.10.12/24), a git repository with two
nodes (vm-1 boots with SeaBIOS + iPXE ROM, vm-2 with OVMF's own PXE), and `netboot-reconcile run`
serving DHCP (full mode, on the bridge), TFTP (:69) and HTTP (:80) from it. Torn down in a
finalizer: daemon, QEMU guests and the RA sender are killed, the namespace (bridge, taps) deleted.
`live_site` (module): the same kind of lab with one node booting the live image.
Logs (daemon, serial consoles) stay in the pytest tmp directory. Every failing e2e test, whatever
assertion failed, shows the last lines of each guest's serial console and of the daemon's log
(`pytest_runtest_makereport` below, from the `Site` fixtures it used: `Site.evidence`).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.assets import AssetError, BootAssets, build_assets, install_into
from tests.e2e.harness import OVMF_CODE, OVMF_VARS
from tests.e2e.liveimage import LiveImage, build_live_image, install_live_into
from tests.e2e.site import (
    NETBOOT,
    Site,
    live_node_specs,
    live_site_files,
    node_specs,
    serving_site,
    site_files,
)
from tests.support import require_root, require_tool

TOOLS = (
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("ip", "iproute2"),
    ("busybox", "busybox-static"),
    ("git", "git"),
    ("curl", "curl"),
    ("apt-get", "apt"),
    ("dpkg-deb", "dpkg"),
)
FILES = (
    (OVMF_CODE, "ovmf"),
    (OVMF_VARS, "ovmf"),
    (Path("/usr/lib/ipxe/ipxe.efi"), "ipxe"),
    (Path("/usr/lib/ipxe/qemu/efi-virtio.rom"), "ipxe-qemu"),
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A failed e2e test's report gains, per `Site` it used, the guests' consoles and the daemon's log."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        if isinstance(value, Site):
            report.sections.append((f"e2e evidence ({name}): serial consoles and daemon log", value.evidence()))


def require_e2e() -> None:
    require_root()
    for tool, package in TOOLS:
        require_tool(tool, package)
    for path, package in FILES:
        if not path.exists():
            pytest.fail(f"{path} not found: apt-get install {package} (scripts/test.sh installs it)")
    if not NETBOOT.exists():
        pytest.fail(f"{NETBOOT} not found: create the venv (scripts/test.sh, or pip install -e '.[test]')")


@pytest.fixture(scope="session")
def boot_assets() -> BootAssets:
    require_e2e()
    try:
        return build_assets()
    except AssetError as exc:
        pytest.fail(f"building the e2e boot assets failed: {exc}")


@pytest.fixture(scope="module")
def site(boot_assets: BootAssets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    nodes = node_specs(2)
    with serving_site(tmp_path_factory.mktemp("e2e"), nodes, lambda assets: install_into(boot_assets, assets),
                      lambda lab: site_files(lab.server_ip, lab.bridge, nodes),
                      "e2e site: two nodes booting the busybox initramfs") as built:
        yield built


@pytest.fixture(scope="session")
def live_image() -> LiveImage:
    require_e2e()
    for tool, package in (("mmdebstrap", "mmdebstrap"), ("mksquashfs", "squashfs-tools")):
        require_tool(tool, package)
    try:
        return build_live_image()
    except AssetError as exc:
        pytest.fail(f"building the e2e live image (Debian + cloud-init) failed: {exc}")


@pytest.fixture(scope="module")
def live_site(live_image: LiveImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One node (`ci-1`, BIOS + iPXE ROM) booting the Debian live image; the daemon serving commit 1."""
    nodes = live_node_specs()
    with serving_site(tmp_path_factory.mktemp("e2e-live"), nodes, lambda assets: install_live_into(live_image, assets),
                      lambda lab: live_site_files(lab.server_ip, lab.bridge, nodes),
                      "e2e live site: one node booting Debian with cloud-init") as built:
        yield built
