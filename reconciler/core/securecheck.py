"""Secure Boot checks of a repository: what a `secure_boot` site is missing.

Called by `core.validate` (`check_profiles`: a repository fact) and by the daemon's reconcile
step (`missing_binaries`: a fact of the serving machine, given the function that tells whether
a file exists). Under Secure Boot, Debian's signed GRUB has no HTTP: a kernel or initrd must be
a file this server serves (`/assets/...` or a URL under `server.address`), fetched over TFTP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from reconciler.core import template
from reconciler.core.bootfiles import profile_secure_boot, uses_secure_boot
from reconciler.core.codes import issue
from reconciler.core.collect import Findings
from reconciler.core.locate import Locator
from reconciler.core.model import DesiredState, Issue, Profile, Site


def remote_path(site: Site, path: str) -> bool:
    """Whether a profile's kernel/initrd entry names another server (a template is judged as rendered)."""
    path = path.rsplit(maxsplit=1)[-1] if path.startswith("--name ") else path
    if template.is_template(path) or path.startswith("/"):
        return False
    return not path.startswith(site.server_url + "/")


def check_profiles(site: Site, profiles: Mapping[str, Profile], used: Iterable[str], where: Locator,
                   out: Findings) -> None:
    """`secure-boot-remote-file` for a Secure Boot profile (used by a node or group) whose kernel
    or initrd is on another server."""
    for pid in sorted(set(used)):
        profile = profiles.get(pid)
        if profile is None or not profile_secure_boot(site, profile):
            continue
        for index, path in enumerate((profile.boot.kernel, *profile.boot.initrd)):
            if path and remote_path(site, path):
                out.report("secure-boot-remote-file", where.boot_path(profile, index),
                           f"profile {pid!r} boots under Secure Boot, and {path} is not on this server "
                           f"({site.server_url}): the signed GRUB fetches over TFTP only; serve it from "
                           "--assets-dir (/assets/...)")


def missing_binaries(state: DesiredState, exists: Callable[[str], bool]) -> tuple[Issue, ...]:
    """`secure-boot-file-missing` for each signed binary the Secure Boot chain needs that the
    serving machine lacks (with the Debian package that installs it at the default path)."""
    if not uses_secure_boot(state):
        return ()
    files = state.site.boot_files
    found = []
    for key, path, package in (("shim_x64", files.shim_x64, "shim-signed"),
                               ("grub_x64", files.grub_x64, "grub-efi-amd64-signed")):
        if not exists(path):
            found.append(issue("secure-boot-file-missing", state.site.source,
                               f"boot_files.{key}: {path} is not on this machine (apt-get install {package}): "
                               "UEFI PXE machines under secure_boot cannot boot"))
    return tuple(found)
