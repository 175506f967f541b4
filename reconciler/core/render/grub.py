"""GRUB configs: one per node (what `/grub?mac=` serves), the GRUB twin of the iPXE script;
and the Secure Boot chain's TFTP configs (`secure_boot_files`).

Called by `render_generation`. Every word GRUB reads from us is single-quoted (a `'` inside is
written `'\\''`), so `;`, `$`, `{`, `#` and spaces in a value are data, never GRUB syntax; this
matters because `ds=nocloud;s=...` holds a `;`, GRUB's command separator. URLs on an HTTP
server become GRUB device paths: `http://host:port/p` -> `(http,host:port)/p`.

Entry 0 loads the kernel and initrds and boots; when it fails, the fallback entry says so and
reboots after a pause. A profile with no kernel boots the local disk: on EFI it exits to the
firmware (which tries its next boot device, as iPXE's `exit` does); on BIOS it chainloads the
first disk.

Secure Boot: Debian's signed GRUB netboot image reads `(tftp,SERVER)/grub/grub.cfg` and has no
http module (`insmod http` is refused by the Secure Boot policy), so the generation holds
`tftp/grub/grub.cfg`, which sources the machine's own `grub.cfg-<mac>` (GRUB's
`$net_default_mac`, lowercase with colons), else `grub.cfg-default` (the default group's profile,
for an unknown machine under `unknown_clients: boot`), whose kernel and initrd are the same pinned paths
fetched over TFTP (`(tftp,SERVER)/r/<sha>/assets/...`, served by the TFTP server from
--assets-dir). A kernel on another server cannot be reached that way: the config says so
(and validation flags it, `secure-boot-remote-file`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from reconciler.core.model import Site
from reconciler.core.render.nodes import NodeBoot

_HTTP_URL = re.compile(r"http://([^/]+)(/.*)?")
SECURE_CONFIG = "tftp/grub/grub.cfg"  # where the signed GRUB netboot image looks (its prefix)
SECURE_NODE_PREFIX = "tftp/grub/grub.cfg-"  # + the machine's MAC
SECURE_DEFAULT = "tftp/grub/grub.cfg-default"  # the default group's, for unknown machines


def quote(word: str) -> str:
    """One GRUB word holding `word` literally."""
    return "'" + word.replace("'", "'\\''") + "'"


def device_path(url: str) -> str:
    match = _HTTP_URL.fullmatch(url)
    if match is None:
        return url
    return f"(http,{match.group(1)}){match.group(2) or '/'}"


def tftp_path(site: Site, url: str) -> str | None:
    """`url` on our HTTP server as a GRUB TFTP path to the same file, None for another server's."""
    base = site.server_url
    if not url.startswith(base + "/"):
        return None
    return f"(tftp,{site.server_address}){url[len(base):]}"


def script(
    title: str,
    kernel: str,
    initrd: tuple[str, ...],
    args: tuple[str, ...],
    revision: str,
    device: Callable[[str], str] = device_path,
    preamble: tuple[str, ...] = (),
) -> str:
    lines = [f"# netboot-reconcile {title}, revision {revision}", *preamble, "set timeout=0", "set default=0"]
    if not kernel:
        lines += [
            f"menuentry {quote(title + ': boot from the local disk')} {{",
            f"  echo {quote('netboot-reconcile: ' + title + ': booting from the local disk')}",
            '  if [ "${grub_platform}" = "efi" ]; then',
            "    exit",
            "  fi",
            "  insmod chain",
            "  set root=(hd0)",
            "  chainloader +1",
            "}",
            "",
        ]
        return "\n".join(lines)
    words = " ".join(quote(w) for w in (device(kernel), *args))
    lines += [
        "set fallback=1",
        f"menuentry {quote(title)} {{",
        f"  echo {quote('netboot-reconcile: ' + title + ': loading the kernel')}",
        f"  linux {words}",
    ]
    if initrd:
        lines += [
            f"  echo {quote('netboot-reconcile: loading the initrd')}",
            "  initrd " + " ".join(quote(device(u)) for u in initrd),
        ]
    lines += [
        "}",
        f"menuentry {quote(title + ': boot failed')} {{",
        f"  echo {quote('netboot-reconcile: ' + title + ': boot failed, rebooting in 30 s')}",
        "  sleep 30",
        "  reboot",
        "}",
        "",
    ]
    return "\n".join(lines)


def render_node(plan: NodeBoot, revision: str) -> bytes:
    title = f"node {plan.node.name} ({plan.node.mac}) profile {plan.profile.id}"
    return script(title, plan.kernel, plan.initrd, plan.args, revision).encode()


def render_unrenderable(title: str, reason: str, revision: str) -> bytes:
    """A config for a group whose profile needs a known node (its templates use node values)."""
    return (
        f"# netboot-reconcile {title}, revision {revision}\n"
        f"echo {quote('netboot-reconcile: ' + title + ': ' + reason)}\nsleep 30\nexit\n"
    ).encode()


def secure_boot_config(revision: str) -> bytes:
    """`/grub/grub.cfg` for the signed GRUB: the machine's own config, or a message and a reboot."""
    missing = "netboot-reconcile: no Secure Boot configuration for this machine ($net_default_mac), rebooting in 30 s"
    return "\n".join([
        f"# netboot-reconcile Secure Boot GRUB configuration, revision {revision}",
        "set netboot_node=",
        'source "$prefix/grub.cfg-$net_default_mac"',
        'if [ -z "$netboot_node" ]; then',
        '  source "$prefix/grub.cfg-default"',
        "fi",
        'if [ -z "$netboot_node" ]; then',
        "  set timeout=0",
        '  menuentry "no configuration" {',
        f'    echo "{missing}"',
        "    sleep 30",
        "    reboot",
        "  }",
        "fi",
        "",
    ]).encode()


def secure_boot_script(
    site: Site, title: str, kernel: str, initrd: tuple[str, ...], args: tuple[str, ...], revision: str, marker: str
) -> bytes:
    """A Secure Boot config: kernel and initrds over TFTP (signed GRUB has no HTTP). It sets
    `netboot_node` to `marker`, which tells `/grub/grub.cfg` a config was found."""
    remote = [u for u in (kernel, *initrd) if u and tftp_path(site, u) is None]
    preamble = (f"set netboot_node={quote(marker)}",)
    if remote:
        reason = f"{remote[0]} is not on this server: signed GRUB fetches over TFTP only"
        return "\n".join([
            f"# netboot-reconcile {title}, revision {revision}", *preamble, "set timeout=0",
            f"menuentry {quote(title + ': cannot boot')} {{",
            f"  echo {quote('netboot-reconcile: ' + title + ': ' + reason)}",
            "  sleep 30",
            "  reboot",
            "}",
            "",
        ]).encode()

    def device(url: str) -> str:
        return tftp_path(site, url) or url

    return script(title, kernel, initrd, args, revision, device, preamble).encode()


def secure_boot_node(site: Site, plan: NodeBoot, revision: str) -> bytes:
    """A machine's own Secure Boot config (`grub.cfg-<mac>`)."""
    title = f"node {plan.node.name} ({plan.node.mac}) profile {plan.profile.id}"
    return secure_boot_script(site, title, plan.kernel, plan.initrd, plan.args, revision, plan.node.name)


def secure_boot_files(site: Site, plans: list[NodeBoot], revision: str) -> dict[str, bytes]:
    """The generation's TFTP files for the Secure Boot chain: `grub/grub.cfg` and, per known
    machine (`plans`), `grub/grub.cfg-<mac>`."""
    files = {SECURE_CONFIG: secure_boot_config(revision)}
    for plan in plans:
        files[SECURE_NODE_PREFIX + plan.node.mac] = secure_boot_node(site, plan, revision)
    return files
