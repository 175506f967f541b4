"""DHCP decisions: a decoded message + one generation's plan + a lease view -> what to answer.

Called by `servers.dhcp` once per received datagram. `plan_dhcp(state)` turns a validated
`DesiredState` into lookup tables (MAC -> reservation, per-subnet options, boot file names
and URLs) ONCE per generation (`Generation.dhcp_plan`). `decide(...)` is pure apart from
reading the `LeaseView` it is given and filling the caller's `AnswerMemo`: it returns a `Decision` with the reply (or
none), where to send it (RFC 2131 §4.1), the lease change the server must apply (and make
durable before sending an ACK), and the boot-event facts to record (none for lease upkeep:
a renewal is not a boot, see `is_upkeep`).

The boot decision follows CONTRACT §4 (`choose_boot`): iPXE (user class `iPXE` or option 175)
always gets the `boot.ipxe` URL, never a binary, so a chainload loop cannot happen; UEFI HTTP
boot gets the UEFI iPXE binary as an http:// URL with option 60 echoed; PXE firmware gets the
iPXE binary for its architecture over TFTP, or, UEFI x64 under `secure_boot` (the site's, or a
node's profile's), the signed shim. Proxy mode answers PXE 2.1 ProxyDHCP only.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network
from typing import Literal, NamedTuple, Protocol

from reconciler.core.bootfiles import BootTable, boot_table, profile_secure_boot
from reconciler.core.events import Stage
from reconciler.core.model import DesiredState, DhcpMode, Node, Profile, Site, Subnet, UnknownClients
from reconciler.protocol import dhcp as d

PROXY_PORT = 4011
OFFER_HOLD_SECONDS = 60.0
IPXE_USER_CLASS = b"iPXE"
FIRMWARE_VENDOR_CLASSES = (b"PXEClient", b"HTTPClient")  # option 60 of PXE and UEFI HTTP boot

_ARCH_IN_VENDOR_CLASS = re.compile(r"Arch:(\d{5})")


# ---------------------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True)
class Reservation:
    """A node known by MAC: its fixed address (None: it takes one from the pool) and name.
    Slotted: a plan holds one per node (~145 -> ~96 bytes each)."""

    mac: str
    node: str
    hostname: str
    ip: IPv4Address | None
    # Derived once per plan for the per-packet path:
    hostname_option: bytes = b""  # option 12's value
    ip_text: str = ""  # str(ip), for boot events
    subnet: SubnetPlan | None = None  # the declared subnet holding `ip`
    # Its profile's `secure_boot` when that differs from the site's (the other boot chain for
    # UEFI x64 PXE), else None.
    secure_boot: bool | None = None


@dataclass(frozen=True)
class SubnetPlan:
    """A subnet with its reply options pre-encoded."""

    subnet: Subnet
    options: Mapping[int, bytes]  # 1, 3, 6, 15 (lease times are added per reply)
    pool: tuple[IPv4Address, IPv4Address] | None

    def in_pool(self, ip: IPv4Address) -> bool:
        return self.pool is not None and self.pool[0] <= ip <= self.pool[1]


@dataclass(frozen=True)
class DhcpPlan:
    """Everything a DHCP exchange needs from one generation, derived once per revision."""

    revision: str
    mode: DhcpMode
    server_id: IPv4Address
    unknown_clients: UnknownClients
    reservations: Mapping[str, Reservation]  # by MAC
    reserved_ips: Mapping[IPv4Address, str]  # fixed address -> MAC
    subnets: tuple[SubnetPlan, ...]
    boot: BootTable  # CONTRACT §4, the same table the dhcpd/Kea/dnsmasq renderers write out
    networks: tuple[tuple[int, int, SubnetPlan], ...] = ()  # (mask, network) as integers, per subnet

    def subnet_for(self, ip: IPv4Address) -> SubnetPlan | None:
        for plan in self.subnets:
            if ip in plan.subnet.network:
                return plan
        return None

    def subnet_at(self, address: int) -> SubnetPlan | None:
        """The declared subnet holding `address` (an IPv4 address as an integer), if any."""
        for mask, network, plan in self.networks:
            if address & mask == network:
                return plan
        return None


def _ips(values: tuple[IPv4Address, ...]) -> bytes:
    return b"".join(ip.packed for ip in values)


def _own_chain(site: Site, profile: Profile | None) -> bool | None:
    secure = profile_secure_boot(site, profile)
    return secure if secure != site.secure_boot else None


def plan_dhcp(state: DesiredState, previous: tuple[DhcpPlan, DesiredState] | None = None,
              changed: Sequence[tuple[Node, Node]] | None = None) -> DhcpPlan:
    """Derive the per-generation lookup tables. Pure; called once per revision by the server.
    `previous`: the last generation's plan and state; when the site is unchanged, a node whose
    reservation would be the same keeps its (`_patched`; at 10,000 nodes on a loaded machine,
    90-130 ms built whole against 6-8 ms patched). `changed`: the nodes that differ from the
    previous state's, (before, after) by name, the others the same in the same order: only theirs
    are looked at, when no MAC changed and the profiles are the same (~0.1 ms for one node)."""
    if previous is not None and previous[1].site == state.site:
        if changed is not None and state.profiles == previous[1].profiles \
                and all(before.mac == after.mac for before, after in changed):
            return _patched(state, *previous, [after for _, after in changed])
        return _patched(state, *previous)
    site = state.site
    subnets: list[SubnetPlan] = []
    for subnet in site.subnets:
        options: dict[int, bytes] = {d.OPT_SUBNET_MASK: subnet.network.netmask.packed}
        if subnet.routers:
            options[d.OPT_ROUTERS] = _ips(subnet.routers)
        if subnet.dns_servers:
            options[d.OPT_DNS] = _ips(subnet.dns_servers)
        if subnet.domain_name:
            options[d.OPT_DOMAIN_NAME] = subnet.domain_name.encode("ascii", "replace")
        subnets.append(SubnetPlan(subnet=subnet, options=options, pool=subnet.pool))
    def holding(ip: IPv4Address | None) -> SubnetPlan | None:
        return next((plan for plan in subnets if ip is not None and ip in plan.subnet.network), None)

    reservations = {
        node.mac: Reservation(
            mac=node.mac,
            node=node.name,
            hostname=node.hostname,
            ip=node.ip,
            hostname_option=node.hostname.encode("ascii", "replace"),
            ip_text=str(node.ip) if node.ip is not None else "",
            subnet=holding(node.ip),
            secure_boot=_own_chain(site, state.profiles.get(node.profile)),
        )
        for node in state.nodes
    }
    reserved_ips = {node.ip: node.mac for node in state.nodes if node.ip is not None}
    return DhcpPlan(
        revision=state.revision,
        mode=site.dhcp_mode,
        server_id=site.server_address,
        unknown_clients=site.unknown_clients,
        reservations=reservations,
        reserved_ips=reserved_ips,
        subnets=tuple(subnets),
        boot=boot_table(site),
        networks=tuple((int(p.subnet.network.netmask), int(p.subnet.network.network_address), p) for p in subnets),
    )


def _patched(state: DesiredState, previous: DhcpPlan, old: DesiredState,
             only: Sequence[Node] | None = None) -> DhcpPlan:
    """`plan_dhcp(state)` from the plan of `old`, whose site is the same (its SubnetPlans are
    kept, so kept reservations still point at the plan's own subnets). `only`: the nodes that may
    differ, each at a MAC `old`'s plan has in the same place (the others' reservations are kept)."""
    site = state.site
    own = {pid: _own_chain(site, profile) for pid, profile in state.profiles.items()}
    subnets = previous.subnets
    kept = previous.reservations
    reservations: dict[str, Reservation] = {} if only is None else dict(kept)
    replaced: list[Reservation] = []  # the previous plan's reservations this one does not keep
    added: list[Reservation] = []
    for node in state.nodes if only is None else only:
        chain = own.get(node.profile) if node.profile in own else _own_chain(site, None)
        before = kept.get(node.mac)
        if before is not None and before.node == node.name and before.hostname == node.hostname \
                and before.ip == node.ip and before.secure_boot == chain:
            reservations[node.mac] = before
            continue
        if before is not None:
            replaced.append(before)
        ip = node.ip
        reservations[node.mac] = new = Reservation(
            mac=node.mac, node=node.name, hostname=node.hostname, ip=ip,
            hostname_option=node.hostname.encode("ascii", "replace"),
            ip_text=str(ip) if ip is not None else "",
            subnet=next((plan for plan in subnets if ip is not None and ip in plan.subnet.network), None),
            secure_boot=chain,
        )
        added.append(new)
    if only is None:  # (with `only`, `reservations` started as a copy of `kept`: every MAC is still there)
        replaced += (kept[mac] for mac in kept.keys() - reservations.keys())
    reserved_ips = previous.reserved_ips
    if replaced or added:
        patched = dict(reserved_ips)
        for gone in replaced:
            if gone.ip is not None and patched.get(gone.ip) == gone.mac:
                del patched[gone.ip]
        patched.update((r.ip, r.mac) for r in added if r.ip is not None)
        reserved_ips = patched
    return replace(previous, revision=state.revision, reservations=reservations, reserved_ips=reserved_ips)


# ---------------------------------------------------------------------------- boot choice


BootKind = Literal["ipxe-script", "http", "tftp"]


@dataclass(frozen=True)
class BootChoice:
    """What a netbooting client is told to load, and how."""

    kind: BootKind
    filename: str
    arch: int | None
    vendor_class: bytes | None = None  # option 60 to put in the reply (HTTPClient echo)


def client_arch(message: d.DhcpMessage) -> int | None:
    """Option 93's first architecture, else the `Arch:NNNNN` of a PXE/HTTP vendor class."""
    arches = message.client_arches
    if arches:
        return arches[0]
    match = _ARCH_IN_VENDOR_CLASS.search(message.vendor_class)
    return int(match.group(1)) if match else None


def is_ipxe(message: d.DhcpMessage) -> bool:
    """iPXE identifies itself by user class `iPXE` (raw or RFC 3004) or by sending option 175."""
    return d.OPT_IPXE_ENCAP in message.options or IPXE_USER_CLASS in message.user_classes


def is_netboot_client(message: d.DhcpMessage) -> bool:
    """Firmware (PXE, UEFI HTTP boot: option 60) or iPXE: a machine trying to netboot."""
    return message.options.get(d.OPT_VENDOR_CLASS, b"").startswith(FIRMWARE_VENDOR_CLASSES) or is_ipxe(message)


def choose_boot(message: d.DhcpMessage, plan: DhcpPlan, own_chain: bool | None = None) -> BootChoice | None:
    """CONTRACT §4 (`core.bootfiles`) for a client allowed to netboot; None: no netboot answer.
    `own_chain`: the known machine's `Reservation.secure_boot` (its profile overrides the site's)."""
    arch = client_arch(message)
    if is_ipxe(message):
        # Checked first and unconditionally: iPXE is never handed an iPXE binary (no loop).
        return BootChoice("ipxe-script", plan.boot.ipxe_url, arch)
    row = plan.boot.match(message.options.get(d.OPT_VENDOR_CLASS, b""), arch)
    if row is None:
        return None
    echo = row.vendor_class.encode() if row.echo_vendor_class else None
    filename = row.other_chain if own_chain is not None and row.other_chain else row.filename
    return BootChoice(row.transport, filename, arch, echo)


# ---------------------------------------------------------------------------- leases


LeaseState = Literal["offered", "bound", "declined"]


class Lease(NamedTuple):
    """One pool address held by a MAC until `expires` (seconds since the epoch).

    Lease, LeaseChange and Route are named tuples, not frozen dataclasses: one or two are made
    per packet, and a named tuple is built several times faster."""

    ip: IPv4Address
    mac: str
    expires: float
    state: LeaseState


class LeaseView(Protocol):
    """What the decider reads of the lease store (implemented by adapters.leases.LeaseStore)."""

    def lease_of(self, mac: str, network: IPv4Network | None = None) -> Lease | None:
        """The MAC's lease (offered or bound) in `network` (None: its latest anywhere); a MAC
        holds one lease per subnet."""
        ...

    def holder_of(self, ip: IPv4Address) -> Lease | None: ...

    def find_free(
        self, first: IPv4Address, last: IPv4Address, now: float, avoid: Container[IPv4Address]
    ) -> IPv4Address | None: ...


class LeaseChange(NamedTuple):
    """What the server must do to the lease store. `bind` must be durable before the ACK leaves."""

    kind: Literal["offer", "bind", "release", "decline"]
    ip: IPv4Address
    mac: str
    expires: float
    # The subnet of `ip`: an offer or bind replaces the MAC's other lease in it, and only there
    # (a lease per client and subnet). None: in any subnet.
    network: IPv4Network | None = None


# ---------------------------------------------------------------------------- decision


RouteKind = Literal["relay", "ciaddr", "broadcast", "chaddr", "source"]


class Route(NamedTuple):
    """Where a reply goes (RFC 2131 §4.1); the server turns this into a socket address.

    relay: giaddr, port 67 (or the relay's own source port); ciaddr: ciaddr:68; broadcast:
    255.255.255.255:68; chaddr: yiaddr:68 after adding an ARP entry for chaddr (broadcast when
    the kernel refuses); source: back to the datagram's source address and port (PXE 4011).
    """

    kind: RouteKind
    ip: IPv4Address | None = None


@dataclass(frozen=True)
class Decision:
    """The outcome for one received message. `reply` None: stay silent (`reason` says why)."""

    reply: d.DhcpMessage | None
    route: Route | None = None
    lease: LeaseChange | None = None
    stage: str | None = None  # boot-event stage, e.g. Stage.DHCP_OFFER
    node: str | None = None
    reason: str = ""
    detail: Mapping[str, object] = field(default_factory=dict)
    # Options of `reply` already encoded, for `protocol.dhcp.encode(reply, block)`; None: encode
    # them all. Whoever derives a new reply from this one must drop it (see INFORM).
    block: d.OptionBlock | None = None


def _decision(
    reply: d.DhcpMessage | None,
    route: Route | None,
    lease: LeaseChange | None,
    stage: Stage | None,
    node: str | None,
    detail: Mapping[str, object],
    reason: str = "",
    block: d.OptionBlock | None = None,
) -> Decision:
    """`Decision(...)` on the per-packet path without the frozen dataclass `__init__` (see
    `protocol.dhcp.message`): the same value, several microseconds cheaper."""
    built = object.__new__(Decision)
    built.__dict__.update(
        reply=reply, route=route, lease=lease, stage=stage, node=node, reason=reason, detail=detail, block=block
    )
    return built


def silent(reason: str) -> Decision:
    return Decision(reply=None, reason=reason)


def unanswered(message: d.DhcpMessage, reason: str) -> Decision:
    """No answer for a machine no node declares. Silent on the wire; but a netbooting one's
    DISCOVER is a `dhcp-ignored` event, so the dashboard lists it among the unknown machines
    with its vendor class and the group it would match (in proxy mode, or with no pool, it is
    heard from nowhere else). Firmware retries a DISCOVER a few times per boot attempt: about
    as many events as a full-mode OFFER to an unknown machine makes."""
    if message.message_type != d.DISCOVER or not is_netboot_client(message):
        return silent(reason)
    return Decision(reply=None, reason=reason, stage=Stage.DHCP_IGNORED,
                    detail={**_detail(message, None, None), "reason": reason})


def _route(message: d.DhcpMessage, yiaddr: IPv4Address) -> Route:
    if message.giaddr != d.ZERO_IP:
        return Route("relay", message.giaddr)
    if message.ciaddr != d.ZERO_IP:
        return Route("ciaddr", message.ciaddr)
    if message.broadcast or yiaddr == d.ZERO_IP:
        return Route("broadcast")
    return Route("chaddr", yiaddr)


def _select_subnet(message: d.DhcpMessage, plan: DhcpPlan, local: int) -> SubnetPlan | None:
    """giaddr picks the subnet of a relayed message; else the client's own address (ciaddr),
    else the address of the interface the request came in on (`local`), when a declared subnet
    holds it; else the subnet server.address is on (or the only one)."""
    if message.giaddr != d.ZERO_IP:
        return plan.subnet_for(message.giaddr)
    if message.ciaddr != d.ZERO_IP:
        found = plan.subnet_for(message.ciaddr)
        if found is not None:
            return found
    if local:
        found = plan.subnet_at(local)
        if found is not None:
            return found
    local_plan = plan.subnet_for(plan.server_id)
    if local_plan is not None:
        return local_plan
    return plan.subnets[0] if len(plan.subnets) == 1 else None


def _base_reply(message: d.DhcpMessage, mtype: int, options: dict[int, bytes]) -> dict[int, bytes]:
    out = {d.OPT_MESSAGE_TYPE: bytes((mtype,))}
    out.update(options)
    client_id = message.options.get(d.OPT_CLIENT_ID)
    if client_id is not None:
        out[d.OPT_CLIENT_ID] = client_id  # RFC 6842
    relay = message.options.get(d.OPT_RELAY_AGENT)
    if relay is not None:
        out[d.OPT_RELAY_AGENT] = relay  # RFC 3046: unchanged
    return out


def _boot_fields(
    boot: BootChoice | None, plan: DhcpPlan, message: d.DhcpMessage, options: dict[int, bytes], proxy: bool
) -> tuple[IPv4Address, bytes]:
    """Add the boot options for `boot` to `options`; return (siaddr, file)."""
    if boot is None:
        return d.ZERO_IP, b""
    filename = boot.filename.encode("ascii", "replace")
    requested = message.options.get(d.OPT_PARAM_REQUEST, b"")
    if len(filename) > 127 or d.OPT_BOOTFILE in requested:
        options[d.OPT_BOOTFILE] = filename
    if boot.kind == "ipxe-script" and not proxy:
        options[d.OPT_IPXE_ENCAP] = d.encode_encapsulated([(d.IPXE_NO_PXEDHCP, b"\x01")])
    if boot.vendor_class is not None:
        options[d.OPT_VENDOR_CLASS] = boot.vendor_class
    siaddr = d.ZERO_IP
    if boot.kind == "tftp":
        siaddr = plan.server_id
        if d.OPT_TFTP_SERVER in requested:
            options[d.OPT_TFTP_SERVER] = str(plan.server_id).encode()
    return siaddr, filename if len(filename) <= 127 else b""


def _detail(message: d.DhcpMessage, boot: BootChoice | None, ip: IPv4Address | None) -> dict[str, object]:
    mtype = message.message_type
    return {
        "message": d.MESSAGE_NAMES.get(mtype or 0, str(mtype)),
        "arch": boot.arch if boot is not None else client_arch(message),
        "vendor_class": message.vendor_class or None,
        "user_class": b",".join(message.user_classes).decode("ascii", "replace") or None,
        "ip": str(ip) if ip is not None else None,
        "filename": boot.filename if boot is not None else None,
    }


class AnswerMemo:
    """The OFFER/ACK parts that do not depend on which client asks (`_answer`), by request
    signature, for ONE plan; filled as requests arrive. Deliberately mutable and owned by one
    thread (the DHCP packet thread, which makes a new memo when it answers with a new plan);
    the plan itself stays frozen. Without a memo, `decide` builds every answer afresh."""

    __slots__ = ("answers", "plan")

    def __init__(self, plan: DhcpPlan) -> None:
        self.plan = plan
        self.answers: dict[tuple[object, ...], _Answer] = {}


def decide(
    message: d.DhcpMessage,
    plan: DhcpPlan,
    leases: LeaseView,
    now: float,
    *,
    port: int = 67,
    memo: AnswerMemo | None = None,
    local: int = 0,
) -> Decision:
    """Answer one message with one generation's plan. `port` is the port it arrived on; `memo`
    (made for this `plan`) keeps answers shared between clients of one kind; `local` is the
    address (an integer; 0: unknown) of the interface it came in on, which picks the subnet of
    an unrelayed request."""
    if memo is not None and memo.plan is not plan:
        raise ValueError("an AnswerMemo answers for the plan it was made for")
    if message.op != d.BOOTREQUEST:
        return silent("not a BOOTREQUEST")
    mtype = message.message_type
    if mtype is None:
        return silent("no DHCP message type (BOOTP is not served)")
    if message.htype != 1 or len(message.chaddr) != 6:
        return silent("not Ethernet")
    if plan.mode == "off":
        return silent("dhcp mode off")
    if plan.mode == "proxy" or port == PROXY_PORT:
        return _decide_proxy(message, mtype, plan, port)
    return _decide_full(message, mtype, plan, leases, now, memo, local)


def _netboot(message: d.DhcpMessage, plan: DhcpPlan) -> tuple[Reservation | None, BootChoice | None]:
    reservation = plan.reservations.get(message.mac)
    if reservation is None and plan.unknown_clients != "boot":
        return None, None
    return reservation, choose_boot(message, plan, reservation.secure_boot if reservation is not None else None)


def _decide_proxy(message: d.DhcpMessage, mtype: int, plan: DhcpPlan, port: int) -> Decision:
    """PXE 2.1 ProxyDHCP: an OFFER on 67 and an ACK on 4011, boot information only."""
    if port == PROXY_PORT:
        if mtype not in (d.REQUEST, d.INFORM):
            return silent(f"proxy port: {d.MESSAGE_NAMES.get(mtype, mtype)} ignored")
        reply_type, stage = d.ACK, Stage.DHCP_ACK
    else:
        if mtype != d.DISCOVER:
            return silent(f"proxy mode: {d.MESSAGE_NAMES.get(mtype, mtype)} is for the DHCP server")
        reply_type, stage = d.OFFER, Stage.DHCP_OFFER
    reservation, boot = _netboot(message, plan)
    if boot is None and reservation is None and plan.unknown_clients != "boot":
        return unanswered(message, "unknown client (unknown_clients: ignore)")
    if boot is None:
        return silent("no netboot answer for this client")
    options: dict[int, bytes] = {d.OPT_SERVER_ID: plan.server_id.packed}
    vendor = boot.vendor_class or b"PXEClient"
    options[d.OPT_VENDOR_CLASS] = vendor
    if vendor == b"PXEClient":
        # PXE_DISCOVERY_CONTROL = 8: take the boot file from this packet, no menu, no discovery.
        options[d.OPT_VENDOR_SPECIFIC] = d.encode_encapsulated([(6, b"\x08")]) + b"\xff"
    uuid = message.options.get(d.OPT_CLIENT_UUID)
    if uuid is not None:
        options[d.OPT_CLIENT_UUID] = uuid
    siaddr, file = _boot_fields(boot, plan, message, options, proxy=True)
    reply = d.DhcpMessage(
        op=d.BOOTREPLY,
        xid=message.xid,
        chaddr=message.chaddr,
        flags=message.flags,
        ciaddr=message.ciaddr,
        siaddr=siaddr,
        giaddr=message.giaddr,
        file=file,
        options=_base_reply(message, reply_type, options),
    )
    route = Route("source") if port == PROXY_PORT else _route(message, d.ZERO_IP)
    return Decision(
        reply=reply,
        route=route,
        stage=stage,
        node=reservation.node if reservation else None,
        detail={**_detail(message, boot, None), "proxy": True},
    )


def _pool_candidate(
    message: d.DhcpMessage, subnet: SubnetPlan, plan: DhcpPlan, leases: LeaseView, now: float
) -> IPv4Address | None:
    assert subnet.pool is not None
    mac = message.mac
    current = leases.lease_of(mac, subnet.subnet.network)
    if current is not None and current.state != "declined" and subnet.in_pool(current.ip):
        holder = leases.holder_of(current.ip)
        if holder is None or holder.mac == mac:
            return current.ip
    wanted = message.ip_option(d.OPT_REQUESTED_IP)
    if wanted is not None and _usable(wanted, mac, subnet, plan, leases, now):
        return wanted
    return leases.find_free(subnet.pool[0], subnet.pool[1], now, plan.reserved_ips)


def _usable(
    ip: IPv4Address, mac: str, subnet: SubnetPlan, plan: DhcpPlan, leases: LeaseView, now: float
) -> bool:
    if not subnet.in_pool(ip) or ip in plan.reserved_ips:
        return False
    holder = leases.holder_of(ip)
    return holder is None or (holder.mac == mac and holder.state != "declined") or holder.expires <= now


_times = struct.Struct("!I").pack


def _lease_seconds(message: d.DhcpMessage, subnet: Subnet) -> int:
    asked = message.options.get(d.OPT_LEASE_TIME)
    seconds = subnet.lease_time
    if asked is not None and len(asked) == 4:
        seconds = struct.unpack("!I", asked)[0]
    return max(60, min(seconds, subnet.max_lease_time))


def _decide_full(
    message: d.DhcpMessage, mtype: int, plan: DhcpPlan, leases: LeaseView, now: float, memo: AnswerMemo | None,
    local: int,
) -> Decision:
    subnet = _select_subnet(message, plan, local)
    if subnet is None:
        return silent("no declared subnet for this link")
    mac = message.mac
    reservation = plan.reservations.get(mac)
    fixed = reservation.ip if reservation is not None and reservation.subnet is subnet else None
    if mtype in (d.REQUEST, d.DECLINE, d.RELEASE) and message.ip_option(d.OPT_SERVER_ID) not in (None, plan.server_id):
        return silent("addressed to another server")

    if mtype == d.DISCOVER:
        ip = fixed
        change = None
        if ip is None:
            if subnet.pool is None:
                return unanswered(message, "unknown client and no pool")
            ip = _pool_candidate(message, subnet, plan, leases, now)
            if ip is None:
                return silent("pool exhausted")
            change = LeaseChange("offer", ip, mac, now + OFFER_HOLD_SECONDS, subnet.subnet.network)
        return _offer_or_ack(message, d.OFFER, ip, subnet, plan, reservation, change, memo)

    if mtype == d.REQUEST:
        ip = message.ip_option(d.OPT_REQUESTED_IP) or (
            message.ciaddr if message.ciaddr != d.ZERO_IP else None
        )
        if ip is None:
            return silent("REQUEST without an address")
        if ip not in subnet.subnet.network:
            return _nak(message, plan, reservation, f"{ip} is not on this network")
        if fixed is not None:
            if ip != fixed:
                return _nak(message, plan, reservation, f"{ip} is not the reserved address")
            return _offer_or_ack(message, d.ACK, ip, subnet, plan, reservation, None, memo)
        if not _usable(ip, mac, subnet, plan, leases, now):
            return _nak(message, plan, reservation, f"{ip} is not available")
        expires = now + _lease_seconds(message, subnet.subnet)
        change = LeaseChange("bind", ip, mac, expires, subnet.subnet.network)
        return _offer_or_ack(message, d.ACK, ip, subnet, plan, reservation, change, memo)

    if mtype == d.DECLINE:
        ip = message.ip_option(d.OPT_REQUESTED_IP)
        if ip is None or not subnet.in_pool(ip):
            return silent("DECLINE of an address not in our pool")
        holder = leases.holder_of(ip)
        if holder is not None and holder.mac != mac:
            return silent("DECLINE of an address held by another client")
        change = LeaseChange("decline", ip, mac, now + subnet.subnet.lease_time)
        return Decision(reply=None, lease=change, reason="declined", stage=Stage.DHCP_DECLINE,
                        node=reservation.node if reservation else None, detail=_detail(message, None, ip))

    if mtype == d.RELEASE:
        ip = message.ciaddr
        holder = leases.holder_of(ip)
        if holder is None or holder.mac != mac:
            return silent("RELEASE of an address this client does not hold")
        return Decision(reply=None, lease=LeaseChange("release", ip, mac, now), reason="released",
                        stage=Stage.DHCP_RELEASE, node=reservation.node if reservation else None,
                        detail=_detail(message, None, ip))

    if mtype == d.INFORM:
        reply = _offer_or_ack(message, d.ACK, d.ZERO_IP, subnet, plan, reservation, None, memo)
        assert reply.reply is not None
        options = dict(reply.reply.options)
        for code in (d.OPT_LEASE_TIME, d.OPT_RENEWAL_T1, d.OPT_REBINDING_T2):
            options.pop(code, None)
        route = Route("relay", message.giaddr) if message.giaddr != d.ZERO_IP else Route("ciaddr", message.ciaddr)
        if route.ip == d.ZERO_IP:
            route = Route("source")
        return replace(
            reply, reply=replace(reply.reply, options=options, yiaddr=d.ZERO_IP), route=route, block=None
        )

    return silent(f"{d.MESSAGE_NAMES.get(mtype, mtype)} is not a client message")


ANSWER_CACHE_MAX = 4096  # request signatures kept per plan; a full cache starts over


@dataclass(frozen=True)
class _Answer:
    """What every client of one kind gets in an OFFER or ACK on one subnet: the reply options
    (server identifier, lease times, subnet options, boot options), siaddr, file and the
    boot-event facts. Only the address, hostname and the echoed options 61 and 82 differ
    between the clients that send the same signature (`_answer_key`), e.g. a rack of one
    model booting at once, or one client's DISCOVER and REQUEST retransmitted."""

    options: Mapping[int, bytes]
    block: d.OptionBlock  # `options`, encoded
    siaddr: IPv4Address
    file: bytes
    detail: Mapping[str, object]  # all but "ip"


def _answer_key(message: d.DhcpMessage, subnet: SubnetPlan, known: bool, own_chain: bool | None) -> tuple[object, ...]:
    """Every input of `_answer`: the options it reads (53 for the event's message name, 51, 55,
    60, 77, 93, whether 175 is there), the subnet and whether the client may netboot at all."""
    options = message.options
    return (
        options.get(d.OPT_MESSAGE_TYPE),
        id(subnet),
        known,
        own_chain,
        options.get(d.OPT_LEASE_TIME),
        options.get(d.OPT_PARAM_REQUEST),
        options.get(d.OPT_VENDOR_CLASS),
        options.get(d.OPT_USER_CLASS),
        options.get(d.OPT_CLIENT_ARCH),
        d.OPT_IPXE_ENCAP in options,
    )


def _answer(
    message: d.DhcpMessage, subnet: SubnetPlan, plan: DhcpPlan, known: bool, own_chain: bool | None = None
) -> _Answer:
    boot = choose_boot(message, plan, own_chain) if known or plan.unknown_clients == "boot" else None
    seconds = _lease_seconds(message, subnet.subnet)
    options: dict[int, bytes] = {
        d.OPT_SERVER_ID: d.packed(plan.server_id),
        d.OPT_LEASE_TIME: _times(seconds),
        d.OPT_RENEWAL_T1: _times(seconds // 2),
        d.OPT_REBINDING_T2: _times(seconds * 7 // 8),
    }
    options.update(subnet.options)
    siaddr, file = _boot_fields(boot, plan, message, options, proxy=False)
    detail = _detail(message, boot, None)
    del detail["ip"]
    return _Answer(options, d.option_block(options), siaddr, file, detail)


def _offer_or_ack(
    message: d.DhcpMessage,
    mtype: int,
    ip: IPv4Address,
    subnet: SubnetPlan,
    plan: DhcpPlan,
    reservation: Reservation | None,
    change: LeaseChange | None,
    memo: AnswerMemo | None,
) -> Decision:
    known = reservation is not None
    own_chain = reservation.secure_boot if reservation is not None else None
    if memo is None:
        answer = _answer(message, subnet, plan, known, own_chain)
    else:
        key = _answer_key(message, subnet, known, own_chain)
        answers = memo.answers
        found = answers.get(key)
        if found is None:
            if len(answers) >= ANSWER_CACHE_MAX:
                answers.clear()
            found = answers[key] = _answer(message, subnet, plan, known, own_chain)
        answer = found
    options = dict(answer.options)
    ip_text = None
    if reservation is not None and reservation.ip == ip:
        options[d.OPT_HOSTNAME] = reservation.hostname_option
        ip_text = reservation.ip_text
    reply = d.message(
        d.BOOTREPLY,
        message.xid,
        message.chaddr,
        _base_reply(message, mtype, options),
        flags=message.flags,
        ciaddr=message.ciaddr,
        yiaddr=ip,
        siaddr=answer.siaddr,
        giaddr=message.giaddr,
        file=answer.file,
    )
    detail = dict(answer.detail)
    detail["ip"] = ip_text or str(ip)
    return _decision(
        reply,
        _route(message, ip),
        change,
        Stage.DHCP_OFFER if mtype == d.OFFER else None if is_upkeep(message) else Stage.DHCP_ACK,
        reservation.node if reservation else None,
        detail,
        block=answer.block,
    )


def is_upkeep(message: d.DhcpMessage) -> bool:
    """A client that already holds its address (RFC 2131 §4.3.2: ciaddr is set only when BOUND,
    RENEWING or REBINDING, and in an INFORM) keeps its lease: it is not booting. Its ACK records
    no boot event; the lease store has the renewal. Every machine renews every T1 (half its
    lease) for as long as it runs, so as events they would grow without a bound and bury the
    boots. Firmware and iPXE are never upkeep: PXE boot-server discovery (set up by another
    ProxyDHCP on the segment) asks port 67 with ciaddr set, and no OS renews as `PXEClient`,
    `HTTPClient` or iPXE. An initramfs asks with ciaddr 0; PXE's port-4011 REQUEST is answered
    in proxy mode and stays an event."""
    if message.ciaddr == d.ZERO_IP:
        return False
    return not is_netboot_client(message)


def _nak(message: d.DhcpMessage, plan: DhcpPlan, reservation: Reservation | None, why: str) -> Decision:
    options = {d.OPT_SERVER_ID: plan.server_id.packed, d.OPT_MESSAGE: why.encode("ascii", "replace")}
    relayed = message.giaddr != d.ZERO_IP
    reply = d.DhcpMessage(
        op=d.BOOTREPLY,
        xid=message.xid,
        chaddr=message.chaddr,
        flags=message.flags | (d.FLAG_BROADCAST if relayed else 0),
        giaddr=message.giaddr,
        options=_base_reply(message, d.NAK, options),
    )
    route = Route("relay", message.giaddr) if relayed else Route("broadcast")
    return Decision(
        reply=reply,
        route=route,
        stage=Stage.DHCP_NAK,
        node=reservation.node if reservation else None,
        reason=why,
        detail={**_detail(message, None, None), "reason": why},
    )
