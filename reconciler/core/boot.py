"""HTTP boot policy: which rendered file answers a boot request, and why not when none does.

Called by the HTTP server (`reconciler.servers.http`) once per request with the ONE Generation
it took for that request (its `DesiredState` and rendered `files`). Pure: values in, values out.

Selection follows matchbox (matchbox/http/parse.go `labelsFromRequest`, server `SelectGroup`):
every query parameter is a label (first value wins, blank values kept); a `mac` parameter (key
in any case) is normalised like Go's `net.ParseMAC` + `String()` and dropped when it does not
parse; groups are tried from most selectors to fewest, ties broken by `core.select.sort_groups`;
a group with no selector is the default group. One rule comes before matchbox's: a request whose
`mac` names a node gets that node's own rendered file (`ipxe/<node>.ipxe`), because the renderer
writes one group per node and a node file is the most specific answer there is. Otherwise the
matched repo group's `ipxe/group-<id>.ipxe` (etc.) answers. `/metadata` appends matchbox's
request variables (`REQUEST_QUERY_<KEY>=`, `REQUEST_RAW_QUERY=`) to the rendered env file.
`/ignition` serves the matched profile's `ignition_id` from `ignition/` (matchbox/http/ignition.go),
`/generic` its `generic_id` as rendered for the node or group (`rendered-generic/`).

Install once (issue 8): a node whose profile says `install_once: true` and that has reported a
successful install (for its MAC and its current `reinstall` counter; the caller passes that
knowledge as `installed(node)`) gets a local-disk script from `/ipxe` and `/grub` instead of
its install, until its `reinstall` counter changes in git. The answer says so
(`Answer.local_disk`), and so does the boot event.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

from reconciler.core import gotemplate
from reconciler.core.events import Stage
from reconciler.core.ignition import is_ignition_json
from reconciler.core.model import DesiredState, Group, Node, Profile
from reconciler.core.render import GENERIC_DIR
from reconciler.core.render import grub as grub_render
from reconciler.core.render import ipxe as ipxe_render
from reconciler.core.secrets import private_paths
from reconciler.core.select import select_group, sort_groups
from reconciler.core.template import TemplateFailure

Endpoint = Literal["ipxe", "grub", "metadata", "generic", "ignition"]
ENDPOINTS: tuple[Endpoint, ...] = ("ipxe", "grub", "metadata", "generic", "ignition")

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"  # matchbox's jsonContentType for /ignition

# matchbox's bootstrap (matchbox/http/ipxe.go), with the `arch` label CONTRACT §3 adds. The
# relative `ipxe?` keeps a pinned bootstrap (/r/<sha>/boot.ipxe) chaining to the pinned /ipxe.
DEFAULT_BOOTSTRAP = (
    b"#!ipxe\n"
    b"chain ipxe?uuid=${uuid}&mac=${mac:hexhyp}&domain=${domain}&hostname=${hostname}"
    b"&serial=${serial}&arch=${buildarch:uristring}\n"
)

_FILES: Mapping[Endpoint, tuple[str, str]] = {
    "ipxe": ("ipxe", ".ipxe"),
    "grub": ("grub", ".cfg"),
    "metadata": ("metadata", ".env"),
    "generic": (GENERIC_DIR, ""),
}

_STAGE: Mapping[Endpoint, Stage] = {
    "ipxe": Stage.IPXE_SCRIPT,
    "grub": Stage.GRUB,
    "metadata": Stage.METADATA,
    "generic": Stage.GENERIC,
    "ignition": Stage.IGNITION,
}

_STAGE_BY_PATH: Mapping[str, Stage] = {f"/{endpoint}": stage for endpoint, stage in _STAGE.items()}

CLOUD_INIT_FILES = ("user-data", "meta-data", "vendor-data", "network-config")

_MAC_SEP = {
    ":": re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})+"),
    "-": re.compile(r"[0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2})+"),
}
_MAC_DOT = re.compile(r"[0-9A-Fa-f]{4}(?:\.[0-9A-Fa-f]{4})+")
# Lengths of 6, 8 and 20 octets: `aa:bb..` is 3n-1 characters, `aabb.ccdd..` is 5n/2-1.
_SEP_LENGTHS = frozenset({17, 23, 59})
_DOT_LENGTHS = frozenset({14, 19, 49})


def parse_mac(text: str) -> str | None:
    """Go's `net.ParseMAC(text).String()`: 6, 8 or 20 octets as `aa:bb..`, `aa-bb..` or `aabb.ccdd..`.

    Returns the lowercase colon form, or None when Go would return an error. One regex match per
    call: this runs on every boot request (`labels_from_query`).
    """
    if len(text) < 14:
        return None
    sep = text[2]
    if sep in {":", "-"}:
        if len(text) not in _SEP_LENGTHS or _MAC_SEP[sep].fullmatch(text) is None:
            return None
        return (text if sep == ":" else text.replace("-", ":")).lower()
    if text[4] == ".":
        if len(text) not in _DOT_LENGTHS or _MAC_DOT.fullmatch(text) is None:
            return None
        digits = text.replace(".", "").lower()
        return ":".join([digits[i : i + 2] for i in range(0, len(digits), 2)])
    return None


def labels_from_query(query: str) -> dict[str, str]:
    """matchbox `labelsFromRequest`: every query parameter is a label; `mac` normalised or dropped.

    Splits like `urllib.parse.parse_qsl(query, keep_blank_values=True)` (`&` only, `+` is a
    space, percent-decoding as UTF-8 with replacement), decoding only the fields that need it.
    """
    labels: dict[str, str] = {}
    if not query:
        return labels
    for pair in query.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        if "+" in key or "%" in key:
            key = unquote(key.replace("+", " "))
        if key in labels:  # Go's values.Get: the first value wins
            continue
        if "+" in value or "%" in value:
            value = unquote(value.replace("+", " "))
        if key == "mac" or key.lower() == "mac":
            mac = parse_mac(value)
            if mac is not None:
                labels[key] = mac
            continue
        labels[key] = value
    return labels


def request_mac(labels: Mapping[str, str]) -> str | None:
    """The request's normalised MAC, whatever the case of the `mac` key (6-octet only)."""
    for key, value in labels.items():
        if key.lower() == "mac" and value.count(":") == 5:
            return value
    return None


def _url_path(url: str) -> str:
    """The path of a boot URL as the client will request it (`/assets/x` or `http://h/r/sha/assets/x`)."""
    path = urlsplit(url).path if "://" in url else url.split("?", 1)[0]
    return strip_revision(path)[1]


def strip_revision(path: str) -> tuple[str | None, str]:
    """`/r/<sha>/rest` -> (sha, `/rest`); any other path -> (None, path)."""
    if path.startswith("/r/"):
        sha, sep, rest = path[3:].partition("/")
        if sha:
            return sha, "/" + rest if sep else "/"
    return None, path


@dataclass(frozen=True)
class BootIndex:
    """Lookups over one DesiredState, built once per generation and reused by every request."""

    state: DesiredState
    by_mac: Mapping[str, Node]
    by_ip: Mapping[str, Node]
    groups: tuple[Group, ...]  # matchbox trial order
    kernels: frozenset[str] = field(default_factory=frozenset)  # URL paths of every profile's kernel
    initrds: frozenset[str] = field(default_factory=frozenset)
    private: frozenset[str] = field(default_factory=frozenset)  # seed files holding secrets (`private_paths`)

    @classmethod
    def build(cls, state: DesiredState) -> BootIndex:
        profiles = state.profiles.values()
        return cls(
            state=state,
            by_mac={node.mac: node for node in state.nodes},
            by_ip={str(node.ip): node for node in state.nodes if node.ip is not None},
            groups=sort_groups(state.groups),
            kernels=frozenset(_url_path(p.boot.kernel) for p in profiles if p.boot.kernel),
            initrds=frozenset(_url_path(i) for p in profiles for i in p.boot.initrd),
            private=private_paths(state),
        )

    def profile_of(self, node: Node | None) -> Profile | None:
        return None if node is None else self.state.profiles.get(node.profile)


@dataclass(frozen=True)
class Target:
    """What a request's labels select: a node (by MAC) or a repo group."""

    node: Node | None
    group: Group | None
    profile: Profile | None

    def file(self, endpoint: Endpoint) -> str:
        directory, ext = _FILES[endpoint]
        if self.node is not None:
            return f"{directory}/{self.node.name}{ext}"
        assert self.group is not None
        return f"{directory}/group-{self.group.id}{ext}"

    @property
    def name(self) -> str:
        if self.node is not None:
            return f"node {self.node.name!r}"
        assert self.group is not None
        return f"group {self.group.id!r}"


def select_target(index: BootIndex, labels: Mapping[str, str]) -> Target | None:
    """Node by MAC first, then matchbox group selection over the repo's groups."""
    mac = request_mac(labels)
    if mac is not None and mac in index.by_mac:
        node = index.by_mac[mac]
        return Target(node, None, index.state.profiles.get(node.profile))
    group = select_group(index.groups, labels)
    if group is None:
        return None
    return Target(None, group, index.state.profiles.get(group.profile))


@dataclass(frozen=True)
class Answer:
    """What to send for a boot request, and what to record about it."""

    status: int
    body: bytes
    stage: Stage
    reason: str = ""
    content_type: str = TEXT
    node: Node | None = None
    target: str | None = None  # "node 'x'" / "group 'y'", for logs and events
    local_disk: str = ""  # why the answer boots the local disk: "profile" (no kernel) or "installed"
    refused: bool = False  # 403: the client's address belongs to another machine (`client_refusal`)


def _describe(labels: Mapping[str, str]) -> str:
    if not labels:
        return "no labels"
    return "labels " + ", ".join(f"{k}={v!r}" for k, v in sorted(labels.items()))


def answer_boot(
    endpoint: Endpoint,
    index: BootIndex,
    files: Mapping[str, bytes],
    labels: Mapping[str, str],
    raw_query: str,
    installed: Callable[[Node], bool] | None = None,
    client: Client | None = None,
) -> Answer:
    """The response to `/ipxe`, `/grub`, `/metadata` or `/generic` with these labels.

    `installed(node)`: whether the node reported a successful install at its current reinstall
    counter (install once: see the module docstring). `client`: who asks; a node's own answer
    is refused (403) to an address known to be another machine's (`client_refusal`). None:
    any client may have it (`--trust-any-client`)."""
    target = select_target(index, labels)
    if target is None:
        mac = request_mac(labels)
        why = f"no node has mac {mac} and " if mac else "the request has no valid mac and "
        reason = f"{why}no group selects {_describe(labels)}, and there is no default group"
        return Answer(404, (reason + "\n").encode(), Stage.UNKNOWN_MACHINE, reason)
    stage = _STAGE[endpoint]
    if target.node is not None and client is not None:
        refusal = client_refusal(index, target.node, client)
        if refusal is not None:
            return Answer(403, (refusal + "\n").encode(), stage, refusal, node=target.node, target=target.name,
                          refused=True)
    if endpoint == "ignition":
        return _ignition(target, files)
    if endpoint == "generic" and (target.profile is None or not target.profile.generic_id):
        profile_id = target.profile.id if target.profile else "?"
        reason = f"{target.name} boots profile {profile_id!r}, which has no generic template"
        return Answer(404, (reason + "\n").encode(), stage, reason, node=target.node, target=target.name)
    path = target.file(endpoint)
    body = files.get(path)
    if body is None:
        reason = f"{target.name} matched, but this generation has no {path}"
        return Answer(404, (reason + "\n").encode(), stage, reason, node=target.node, target=target.name)
    if endpoint == "metadata":
        body = with_request_variables(body, labels, raw_query)
    if endpoint == "generic" and gotemplate.DEFER.encode() in body:
        try:  # matchbox's `.request` fields, known only now (collectVariables)
            filled = gotemplate.fill_deferred(body.decode(), {"request": {"query": labels, "raw_query": raw_query}})
        except TemplateFailure as exc:  # matchbox answers 404 when its template does not render
            reason = f"{target.name}: the generic template does not render for this request: {exc.message}"
            return Answer(404, (reason + "\n").encode(), stage, reason, node=target.node, target=target.name)
        body = filled.encode()
    profile = target.profile
    if endpoint in ("ipxe", "grub") and profile is not None:
        if not profile.boot.kernel:
            return Answer(200, body, stage, node=target.node, target=target.name, local_disk="profile")
        node = target.node
        if node is not None and profile.install_once and installed is not None and installed(node):
            body = local_disk_script(endpoint, node, profile, index.state.revision)
            return Answer(200, body, stage, node=node, target=target.name, local_disk="installed")
    return Answer(200, body, stage, node=target.node, target=target.name)


def _ignition(target: Target, files: Mapping[str, bytes]) -> Answer:
    """matchbox `ignitionHandler`: the matched profile's `ignition_id`, from `ignition/`.

    Ignition JSON (`.ign`, `.ignition`) is served as committed, as matchbox serves it; a Butane
    config is not served (validation says why: no `butane` to translate it)."""
    profile = target.profile
    ignition_id = profile.ignition_id if profile is not None else None
    if profile is None or not ignition_id:
        reason = f"{target.name} boots profile {profile.id if profile else '?'!r}, which has no ignition_id"
        return Answer(404, (reason + "\n").encode(), Stage.IGNITION, reason, node=target.node, target=target.name)
    body = files.get(f"ignition/{ignition_id}")
    if body is None or not is_ignition_json(ignition_id):
        why = "is not in this generation" if body is None else "is a Butane config, and no butane translated it"
        reason = f"{target.name}: profile {profile.id!r} names ignition/{ignition_id}, which {why}"
        return Answer(404, (reason + "\n").encode(), Stage.IGNITION, reason, node=target.node, target=target.name)
    return Answer(200, body, Stage.IGNITION, content_type=JSON, node=target.node, target=target.name)


def local_disk_script(endpoint: Endpoint, node: Node, profile: Profile, revision: str) -> bytes:
    """The iPXE script (`exit`) or GRUB config booting the local disk of an installed node."""
    title = f"node {node.name} ({node.mac}) profile {profile.id}: installed (install_once), reinstall {node.reinstall}"
    if endpoint == "grub":
        return grub_render.script(title, "", (), (), revision).encode()
    return ipxe_render.script(title, "", (), (), (), revision).encode()


def _env_value(value: str) -> str:
    # A query value must not start a line of its own in the env file.
    return value.replace("\r", " ").replace("\n", " ")


# An env-file key holds what matchbox prints in keys (`REQUEST_QUERY_A-B`): a query key with
# anything else (`a%0AX`, `a=b`, `a b`) could start a line or a key of its own, so it is left out.
_ENV_KEY = re.compile(r"[A-Za-z0-9_.-]+")


def with_request_variables(env: bytes, labels: Mapping[str, str], raw_query: str) -> bytes:
    """matchbox `collectVariables`' `request` map, flattened as `renderAsEnvFile` does (keys sorted).

    Keys that are not `[A-Za-z0-9_.-]+` are dropped; values have their line breaks made spaces."""
    lines = [
        f"REQUEST_QUERY_{key.upper()}={_env_value(value)}"
        for key, value in sorted(labels.items())
        if _ENV_KEY.fullmatch(key)
    ]
    lines.append(f"REQUEST_RAW_QUERY={_env_value(raw_query)}")
    if env and not env.endswith(b"\n"):
        env += b"\n"
    return env + ("\n".join(lines) + "\n").encode()


def bootstrap(files: Mapping[str, bytes]) -> bytes:
    """The `/boot.ipxe` script: the generation's rendered one, else matchbox's own."""
    return files.get("boot.ipxe", DEFAULT_BOOTSTRAP)


def asset_stage(index: BootIndex, node: Node | None, url_path: str) -> Stage:
    """kernel / initrd / asset for a request of `url_path` (`/assets/...`, revision stripped).

    With a known node, its profile decides; without one, any profile naming the path does.
    """
    profile = index.profile_of(node)
    if profile is not None:
        if profile.boot.kernel and _url_path(profile.boot.kernel) == url_path:
            return Stage.KERNEL
        if any(_url_path(i) == url_path for i in profile.boot.initrd):
            return Stage.INITRD
        return Stage.ASSET
    if url_path in index.kernels:
        return Stage.KERNEL
    if url_path in index.initrds:
        return Stage.INITRD
    return Stage.ASSET


def node_for_client(index: BootIndex, labels: Mapping[str, str], client: str | None) -> Node | None:
    """The node behind a request without selection: by `mac` query parameter, else by its fixed IP."""
    mac = request_mac(labels)
    if mac is not None:
        return index.by_mac.get(mac)
    if client is not None:
        return index.by_ip.get(client)
    return None


@dataclass(frozen=True)
class Client:
    """Who sent a request: its address, and what the embedded DHCP server knows of that address.

    `holder(address)`: the MAC our DHCP server reserved or leased that address to, None when it
    does not know (no DHCP server of ours, mode off/proxy, a foreign address). It must not raise.
    """

    address: str
    holder: Callable[[str], str | None] | None = None


def client_refusal(index: BootIndex, node: Node, client: Client) -> str | None:
    """Why `client` may not have `node`'s own answers (seed, script, metadata), or None if it may.

    A node's answers carry its report token, so they go only to the machine behind its MAC as
    far as that can be known from the client's address:
    1. the node has a reserved address (`ip`): only that address gets them;
    2. otherwise, an address that is another node's reserved address, or that our DHCP server
       reserved or leased to another MAC, does not get them;
    3. otherwise (nothing known of the address: external DHCP, proxy mode) it does.
    """
    address = client.address.removeprefix("::ffff:")  # an IPv4 client of a dual-stack socket
    if node.ip is not None:
        if str(node.ip) == address:
            return None
        return (f"node {node.name!r} ({node.mac}) has the reserved address {node.ip}, and this request comes "
                f"from {address}")
    other = index.by_ip.get(address)
    if other is not None and other.mac != node.mac:
        return (f"{address} is the reserved address of node {other.name!r} ({other.mac}), "
                f"not of node {node.name!r} ({node.mac})")
    holder = client.holder(address) if client.holder is not None else None
    if holder is not None and holder != node.mac:
        return f"{address} is leased to {holder}, not to node {node.name!r} ({node.mac})"
    return None


@dataclass(frozen=True)
class CloudInitAnswer:
    status: int
    body: bytes
    content_type: str
    reason: str = ""
    node: Node | None = None
    refused: bool = False  # 403: the client's address belongs to another machine (`client_refusal`)


def _user_data_type(body: bytes) -> str:
    head = body.lstrip()[:64].lower()
    if head.startswith(b"#cloud-config"):
        return "text/cloud-config; charset=utf-8"
    if head.startswith(b"#!"):
        return "text/x-shellscript; charset=utf-8"
    if head.startswith(b"content-type: multipart") or head.startswith(b"mime-version"):
        return "multipart/mixed"
    return TEXT


def _unknown_client_refusal(node: Node, client: Client) -> str | None:
    """User-data holding secrets goes only to an address known to be the node's: its reserved
    `ip`, or one our DHCP server leased to its MAC; an address nothing is known of does not get it."""
    address = client.address.removeprefix("::ffff:")
    if node.ip is not None and str(node.ip) == address:
        return None
    if client.holder is not None and client.holder(address) == node.mac:
        return None
    return (f"node {node.name!r} ({node.mac}) has secrets in its user-data, served only to an address known to be "
            f"the node (its reserved ip, or one our DHCP server leased to it); nothing is known of {address}")


def answer_cloud_init(
    index: BootIndex, files: Mapping[str, bytes], mac_text: str, name: str, client: Client | None = None
) -> CloudInitAnswer:
    """`/cloud-init/<mac>/<name>`: the node's NoCloud seed file, with its content type.

    `client`: who asks; the seed (it carries the node's report token) is refused (403) to an
    address known to be another machine's (`client_refusal`), and user-data holding secrets to any
    address not known to be the node's. None: any client may have it (--trust-any-client)."""
    mac = parse_mac(mac_text)
    if mac is None or mac.count(":") != 5:
        reason = f"{mac_text!r} is not a MAC address"
        return CloudInitAnswer(404, (reason + "\n").encode(), TEXT, reason)
    node = index.by_mac.get(mac)
    if node is not None and client is not None:
        refusal = client_refusal(index, node, client)
        if refusal is None and f"cloud-init/{mac}/{name}" in index.private:
            refusal = _unknown_client_refusal(node, client)
        if refusal is not None:
            return CloudInitAnswer(403, (refusal + "\n").encode(), TEXT, refusal, node, refused=True)
    if name not in CLOUD_INIT_FILES:
        reason = f"no NoCloud file {name!r}: there are {', '.join(CLOUD_INIT_FILES)}"
        return CloudInitAnswer(404, (reason + "\n").encode(), TEXT, reason, node)
    body = files.get(f"cloud-init/{mac}/{name}")
    if body is None:
        if name == "vendor-data" and f"cloud-init/{mac}/user-data" in files:
            # vendor-data is optional in NoCloud; answer it empty rather than make cloud-init log a miss
            return CloudInitAnswer(200, b"", "text/cloud-config; charset=utf-8", node=node)
        who = f"node {node.name!r}" if node is not None else f"mac {mac} (no node)"
        reason = f"{who} has no cloud-init seed in this generation"
        return CloudInitAnswer(404, (reason + "\n").encode(), TEXT, reason, node)
    if name in ("meta-data", "network-config"):
        return CloudInitAnswer(200, body, "application/yaml; charset=utf-8", node=node)
    return CloudInitAnswer(200, body, _user_data_type(body), node=node)


def stage_of(path: str) -> Stage:
    """The stage a path (revision stripped) is recorded as when it is answered before selection (410)."""
    if path.startswith("/assets/"):
        return Stage.ASSET
    if path.startswith("/cloud-init/"):
        return cloud_init_stage(path.rsplit("/", 1)[-1], True)
    if path in ("/boot.ipxe", "/boot.ipxe.0"):
        return Stage.IPXE_BOOTSTRAP
    return _STAGE_BY_PATH.get(path, Stage.UNKNOWN_MACHINE)


def cloud_init_stage(name: str, known: bool) -> Stage:
    """The stage of a NoCloud file request: the file's own, or unknown-machine for a stranger
    (`known`: the request named a node or was answered) or a name that is no NoCloud file."""
    return Stage(name) if known and name in CLOUD_INIT_FILES else Stage.UNKNOWN_MACHINE


def known_revisions(revisions: Iterable[str]) -> str:
    """A short list of revisions for a 410 body."""
    revs = sorted(revisions)
    return ", ".join(r[:12] for r in revs[:8]) + (" ..." if len(revs) > 8 else "")
