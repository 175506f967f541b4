"""Netboot lints: mistakes from the field that validate fine but leave a machine that never comes up.

Called by `core.validate` on each profile's rendered kernel arguments and each node's rendered
user-data. Each lint has a stable code and a one-line why; README "Lints" lists them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import yaml

from reconciler.core.model import Issue, Location, Severity


@dataclass(frozen=True)
class Lint:
    code: str
    severity: Severity
    why: str


LINTS = {
    lint.code: lint
    for lint in (
        Lint(
            "nocloud-trailing-slash",
            Severity.ERROR,
            "cloud-init appends 'user-data' to the seed URL as is: without the trailing '/' it fetches "
            "'.../<mac>user-data' and the install waits forever",
        ),
        Lint(
            "nocloud-net-deprecated",
            Severity.WARNING,
            "'ds=nocloud-net' is deprecated since cloud-init 24.1: use 'ds=nocloud'",
        ),
        Lint(
            "ubuntu-iso-cloud-config-url",
            Severity.ERROR,
            "Ubuntu 22.04+ with url=<iso> needs cloud-config-url=/dev/null, or cloud-init also fetches "
            "the ISO as cloud-config (never reaching the NoCloud seed; out of memory on small machines)",
        ),
        Lint(
            "autoinstall-without-ip-dhcp",
            Severity.WARNING,
            "autoinstall over the network needs 'ip=dhcp' so the initramfs brings up the NIC",
        ),
        Lint(
            "autoinstall-without-cloud-init",
            Severity.ERROR,
            "'autoinstall' with no cloud-init attached: the installer has no answers and stops at a prompt",
        ),
        Lint(
            "user-data-not-cloud-config",
            Severity.ERROR,
            "cloud-init ignores user-data whose first line is not '#cloud-config'",
        ),
        Lint(
            "user-data-yaml",
            Severity.ERROR,
            "the rendered user-data is not valid YAML: cloud-init drops it",
        ),
        Lint(
            "autoinstall-version",
            Severity.ERROR,
            "Subiquity refuses an autoinstall config without 'version: 1'",
        ),
        Lint(
            "autoinstall-section-missing",
            Severity.WARNING,
            "with 'autoinstall' on the kernel command line, Subiquity reads the 'autoinstall:' key of "
            "user-data; there is none",
        ),
        Lint(
            "autoinstall-key-misspelt",
            Severity.ERROR,
            "with 'autoinstall' on the kernel command line, Subiquity reads the 'autoinstall:' key of "
            "user-data: a misspelt key is ignored and the install stops at a prompt",
        ),
        Lint(
            "asset-not-listed",
            Severity.ERROR,
            "assets.yaml is the manifest of what /assets serves: a path it does not list is a 404 at boot",
        ),
        Lint(
            "arg-whitespace",
            Severity.ERROR,
            "a rendered kernel argument holds white space or a control character and would split or "
            "break the boot script",
        ),
    )
}

_SEED = re.compile(r"(?:^|;)(?:s|seedfrom)=([^;]*)")  # `seedfrom` is the long name of `s`
_UBUNTU_VERSION = re.compile(r"ubuntu-(\d{2})\.(\d{2})")


def finding(code: str, loc: Location, detail: str = "") -> Issue:
    lint = LINTS[code]
    message = f"{detail}: {lint.why}" if detail else lint.why
    return Issue.at(loc, code, message, lint.severity)


def lint_args(
    args: Sequence[str], arg_loc: Callable[[int], Location], profile_loc: Location, has_cloud_init: bool
) -> list[Issue]:
    """Lints of one profile's rendered kernel arguments."""
    found: list[Issue] = []
    has_autoinstall = "autoinstall" in args
    has_ip_dhcp = any(a == "ip=dhcp" or (a.startswith("ip=") and a.endswith(":dhcp")) for a in args)
    has_null_cloud_config = "cloud-config-url=/dev/null" in args
    for i, arg in enumerate(args):
        if re.search(r"[\s\x00-\x1f\x7f]", arg):
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


def lint_user_data(text: str, loc: Location, autoinstall: bool) -> list[Issue]:
    """Lints of one rendered user-data document; `loc` is the template's location."""
    first = text.split("\n", 1)[0].rstrip()
    if first != "#cloud-config":
        return [finding("user-data-not-cloud-config", Location(loc.file, 1, 1), f"first line is {first!r}")]
    try:
        # The C composer alone: constructing Python values for every node's user-data costs 5x more.
        root = yaml.compose(text, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        return [finding("user-data-yaml", Location(loc.file, line, 0), str(getattr(exc, "problem", exc)))]
    found: list[Issue] = []
    section = _child(root, "autoinstall")
    if isinstance(section, yaml.MappingNode):
        version = _child(section, "version")
        if not (isinstance(version, yaml.ScalarNode) and version.value == "1" and version.tag.endswith(":int")):
            found.append(finding("autoinstall-version", loc))
    if autoinstall and section is None:
        near = _key_like(root, "autoinstall")
        if near is not None:
            key, line = near
            found.append(finding("autoinstall-key-misspelt", Location(loc.file, line, 1),
                                 f"key {key!r} (rendered line {line}): did you mean 'autoinstall'?"))
        else:
            found.append(finding("autoinstall-section-missing", loc))
    return found


def _key_like(node: yaml.Node | None, key: str) -> tuple[str, int] | None:
    """A top-level key spelt nearly as `key` (and the rendered line it is on), if any."""
    if not isinstance(node, yaml.MappingNode):
        return None
    keys = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    close = difflib.get_close_matches(key, [k for k in keys if isinstance(k, str)], n=1, cutoff=0.8)
    return (close[0], keys[close[0]]) if close else None


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return value_node  # type: ignore[no-any-return]
    return None


def asset_path(reference: str, server_url: str) -> str | None:
    """The /assets/... path an argument or boot path refers to on our server, if any."""
    ref = reference.split("=", 1)[1] if reference.startswith("url=") else reference
    if ref.startswith(server_url + "/"):
        ref = ref[len(server_url) :]
    if ref.startswith("/assets/"):
        return ref.split("?", 1)[0]
    return None
