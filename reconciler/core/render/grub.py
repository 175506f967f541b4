"""GRUB configs: one per node (what `/grub?mac=` serves), the GRUB twin of the iPXE script.

Called by `render_generation`. Every word GRUB reads from us is single-quoted (a `'` inside is
written `'\\''`), so `;`, `$`, `{`, `#` and spaces in a value are data, never GRUB syntax; this
matters because `ds=nocloud;s=...` holds a `;`, GRUB's command separator. URLs on an HTTP
server become GRUB device paths: `http://host:port/p` -> `(http,host:port)/p`.

Entry 0 loads the kernel and initrds and boots; when it fails, the fallback entry says so and
reboots after a pause. A profile with no kernel boots the local disk: on EFI it exits to the
firmware (which tries its next boot device, as iPXE's `exit` does); on BIOS it chainloads the
first disk.
"""

from __future__ import annotations

import re

from reconciler.core.render.nodes import NodeBoot

_HTTP_URL = re.compile(r"http://([^/]+)(/.*)?")


def quote(word: str) -> str:
    """One GRUB word holding `word` literally."""
    return "'" + word.replace("'", "'\\''") + "'"


def device_path(url: str) -> str:
    match = _HTTP_URL.fullmatch(url)
    if match is None:
        return url
    return f"(http,{match.group(1)}){match.group(2) or '/'}"


def script(title: str, kernel: str, initrd: tuple[str, ...], args: tuple[str, ...], revision: str) -> str:
    lines = [f"# netboot-reconcile {title}, revision {revision}", "set timeout=0", "set default=0"]
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
    words = " ".join(quote(w) for w in (device_path(kernel), *args))
    lines += [
        "set fallback=1",
        f"menuentry {quote(title)} {{",
        f"  echo {quote('netboot-reconcile: ' + title + ': loading the kernel')}",
        f"  linux {words}",
    ]
    if initrd:
        lines += [
            f"  echo {quote('netboot-reconcile: loading the initrd')}",
            "  initrd " + " ".join(quote(device_path(u)) for u in initrd),
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
