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
            if arg.startswith("ds=nocloud-net;"):
                found.append(finding("nocloud-net-deprecated", arg_loc(i)))
            for seed in _SEED.findall(arg.split(";", 1)[1] if ";" in arg else ""):
                if not seed.endswith("/"):
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



def asset_path(reference: str, server_url: str) -> str | None:
    """The /assets/... path an argument or boot path refers to on our server, if any."""
    ref = reference.split("=", 1)[1] if reference.startswith("url=") else reference
    if ref.startswith(server_url + "/"):
        ref = ref[len(server_url) :]
    if ref.startswith("/assets/"):
        return ref.split("?", 1)[0]
    return None
