"""iPXE scripts: the bootstrap `boot.ipxe` and one script per node (what `/ipxe?mac=` serves).

Called by `render_generation`. A node script prints what it does, fetches the kernel and each
initrd with bounded retries, names every initrd (`initrd --name`) and passes `initrd=<name>`
so EFI-stub kernels find it, then boots. A profile with no kernel means "boot from the local
disk": the script exits and the firmware tries its next boot device.

Values written here were checked by validation: kernel arguments are single tokens (no white
space or control characters) and are never an iPXE operator (`||`, `&&`, `;`) or a comment
(`#...`), so each one stays an argument of the `kernel` line.
"""

from __future__ import annotations

import posixpath
import re

from reconciler.core.model import Site
from reconciler.core.render.nodes import NodeBoot

RETRIES = 5
RETRY_SECONDS = 5
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def render_bootstrap(site: Site) -> bytes:
    """`boot.ipxe`: chain to `/ipxe` with the machine's labels (matchbox's query form)."""
    return (
        "#!ipxe\n"
        f"chain {site.server_url}/ipxe?uuid=${{uuid}}&mac=${{mac:hexhyp}}&domain=${{domain}}"
        "&hostname=${hostname}&serial=${serial}&arch=${buildarch:uristring}\n"
    ).encode()


def initrd_names(urls: tuple[str, ...], given: tuple[str | None, ...]) -> tuple[str, ...]:
    """Names for the initrds: the profile's own (`--name X`), else base names when those are
    safe and distinct, else initrd0, initrd1, ..."""
    names = tuple(g or posixpath.basename(u.split("?", 1)[0]) for u, g in zip(urls, given, strict=True))
    if len(set(names)) == len(names) and all(_SAFE_NAME.fullmatch(n) for n in names):
        return names
    return tuple(g or f"initrd{i}" for i, g in enumerate(given))


def _fetch(label: str, what: str, command: str) -> list[str]:
    return [
        f":{label}",
        f"echo netboot-reconcile: fetching {what}",
        f"{command} && goto {label}_ok ||",
        "inc attempt",
        f"iseq ${{attempt}} {RETRIES} && goto failed ||",
        f"echo netboot-reconcile: {what} failed (attempt ${{attempt}} of {RETRIES}), retrying in {RETRY_SECONDS} s",
        f"sleep {RETRY_SECONDS}",
        f"goto {label}",
        f":{label}_ok",
        "set attempt:int32 0",
    ]


def script(
    title: str,
    plan_kernel: str,
    initrd: tuple[str, ...],
    given_names: tuple[str | None, ...],
    args: tuple[str, ...],
    revision: str,
) -> str:
    """The iPXE script booting `plan_kernel` (or the local disk when it is empty).

    `initrd=<name>` is added for the initrds we name, unless the args already carry it (matchbox's
    Flatcar profiles write `initrd=flatcar_production_pxe_image.cpio.gz` themselves); a profile
    naming its own (matchbox's `--name X`) writes `initrd=X` in its args, as matchbox profiles do."""
    lines = ["#!ipxe", f"# netboot-reconcile {title}, revision {revision}"]
    if not plan_kernel:
        lines += [f"echo netboot-reconcile: {title}: booting from the local disk", "exit", ""]
        return "\n".join(lines)
    names = initrd_names(initrd, given_names)
    ours = [f"initrd={n}" for n, g in zip(names, given_names, strict=True) if g is None and f"initrd={n}" not in args]
    kernel_args = " ".join((*ours, *args))
    lines += [f"echo netboot-reconcile: {title}", "set attempt:int32 0"]
    lines += _fetch("kernel", f"kernel {plan_kernel}", f"kernel {plan_kernel} {kernel_args}".rstrip())
    for i, (name, url) in enumerate(zip(names, initrd, strict=True)):
        lines += _fetch(f"initrd{i}", f"initrd {url}", f"initrd --name {name} {url}")
    lines += [
        "echo netboot-reconcile: booting",
        "boot ||",
        ":failed",
        f"echo netboot-reconcile: {title}: boot failed, rebooting in 30 s",
        "sleep 30",
        "reboot",
        "",
    ]
    return "\n".join(lines)


def render_node(plan: NodeBoot, revision: str) -> bytes:
    title = f"node {plan.node.name} ({plan.node.mac}) profile {plan.profile.id}"
    return script(title, plan.kernel, plan.initrd, plan.initrd_names, plan.args, revision).encode()


def render_unrenderable(title: str, reason: str, revision: str) -> bytes:
    """A script for a group whose profile needs a known node (its templates use node values)."""
    return (
        f"#!ipxe\n# netboot-reconcile {title}, revision {revision}\n"
        f"echo netboot-reconcile: {title}: {reason}\nsleep 30\nexit 1\n"
    ).encode()
