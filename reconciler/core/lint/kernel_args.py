"""Lints of one profile's rendered kernel arguments: the NoCloud seed, Ubuntu's ISO boot,
autoinstall's needs, and the assets they point at.

Called by `core.bootcheck` through `core.lint`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from reconciler.core.codes import lint_issue as finding
from reconciler.core.model import Issue, Location

_SEED = re.compile(r"(?:^|;)(?:s|seedfrom)=([^;]*)")  # `seedfrom` is the long name of `s`
_DSMODE = re.compile(r"(?:^|;)dsmode=")
_NETWORK_SEEDS = ("http://", "https://", "ftp://", "ftps://")
_UBUNTU_VERSION = re.compile(r"ubuntu-(\d{2})\.(\d{2})")
_WHITESPACE = re.compile(r"[\s\x00-\x1f\x7f]")


def lint_args(
    args: Sequence[str], arg_loc: Callable[[int], Location], profile_loc: Location, has_cloud_init: bool
) -> list[Issue]:
    """Lints of one profile's rendered kernel arguments."""
    found: list[Issue] = []
    has_autoinstall = "autoinstall" in args
    has_ip_dhcp = any(a == "ip=dhcp" or (a.startswith("ip=") and a.endswith(":dhcp")) for a in args)
    has_null_cloud_config = "cloud-config-url=/dev/null" in args
    for i, arg in enumerate(args):
        if _WHITESPACE.search(arg):
            found.append(finding("arg-whitespace", arg_loc(i), repr(arg)))
        if arg.startswith(("ds=nocloud;", "ds=nocloud-net;")):
            options = arg.split(";", 1)[1]
            seeds = _SEED.findall(options)
            mode = _seed_mode_detail(arg, seeds, options)
            if mode:
                found.append(finding("nocloud-seed-mode", arg_loc(i), mode))
            for seed in seeds:
                # cloud-init puts the file name in place of '%s' (util.read_seeded), so no '/' is needed
                if not seed.endswith("/") and "%s" not in seed:
                    found.append(finding("nocloud-trailing-slash", arg_loc(i), f"seed URL {seed!r}"))
        if arg.startswith("url=") and arg.lower().endswith(".iso") and not has_null_cloud_config:
            version = _UBUNTU_VERSION.search(arg.lower())
            if version is None or int(version.group(1)) >= 22:
                found.append(finding("ubuntu-iso-cloud-config-url", arg_loc(i), arg))
    if has_autoinstall and not has_ip_dhcp:
        found.append(finding("autoinstall-without-ip-dhcp", profile_loc))
    if has_autoinstall and not has_cloud_init:
        found.append(finding("autoinstall-without-cloud-init", profile_loc))
    return found



def _seed_mode_detail(arg: str, seeds: Sequence[str], options: str) -> str:
    """What is wrong with how a `ds=nocloud...` argument picks cloud-init's dsmode ("" when nothing).

    cloud-init's own NoCloud code decides (tests/integration/test_cloudinit_peers.py runs it):
    `ds=nocloud` sets dsmode=local unless `dsmode=` is given (before 23.2, whatever the seed), and
    a local-mode datasource found in the network stage ends it without running the user-data;
    `ds=nocloud-net` sets dsmode=net everywhere, but 24.1+ logs it as deprecated.
    """
    if arg.startswith("ds=nocloud-net;"):
        return "'ds=nocloud-net'"
    networked = any(s.startswith(_NETWORK_SEEDS) for s in seeds)
    if networked and not _DSMODE.search(options):
        return "'ds=nocloud' with an http seed and no ';dsmode=net'"
    return ""


def asset_path(reference: str, server_url: str) -> str | None:
    """The /assets/... path an argument or boot path refers to on our server, if any."""
    ref = reference.split("=", 1)[1] if reference.startswith("url=") else reference
    if ref.startswith(server_url + "/"):
        ref = ref[len(server_url) :]
    if ref.startswith("/assets/"):
        return ref.split("?", 1)[0]
    return None
