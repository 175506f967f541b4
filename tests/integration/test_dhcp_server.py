"""servers.dhcp with real clients on a namespaced Ethernet: the address and boot file they get.

Clients: ISC dhclient, busybox udhcpc (plain, PXE arch 0 and 7, iPXE), dhcpcd. The server runs
inside the lab's server namespace (its sockets are bound there by `Lab.call_in`); each test's
client gets a namespace of its own with the MAC the test needs.
"""

from __future__ import annotations

import dataclasses
import errno
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from reconciler.adapters.leases import LeaseStore
from reconciler.core.events import CollectEvents
from reconciler.core.model import Subnet
from reconciler.generation import Generation, GenerationHolder
from reconciler.servers.dhcp import DhcpServer
from tests.dhcp_fixtures import make_state, node
from tests.dhcp_lab import Lab
from tests.support import free_port, require_root, require_tool

SERVER = "10.99.0.1"
SCRIPT_URL = "http://10.99.0.1:8080/boot.ipxe"
NODES = (
    node("dhclient-node", "52:54:00:d1:00:01", "10.99.0.21"),
    node("pxe-bios", "52:54:00:d1:00:02", "10.99.0.22"),
    node("pxe-uefi", "52:54:00:d1:00:03", "10.99.0.23"),
    node("ipxe-node", "52:54:00:d1:00:04", "10.99.0.24"),
    node("dhcpcd-node", "52:54:00:d1:00:05", "10.99.0.25"),
)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@dataclass
class Served:
    lab: Lab
    server: DhcpServer
    holder: GenerationHolder
    events: CollectEvents
    leases: LeaseStore
    tmp: Path

    def client(self, mac: str) -> str:
        return self.lab.add_host(f"c{len(self.lab.hosts) + 1}", mac)

    def swap(self, revision: str, nodes: tuple[object, ...], **kwargs: object) -> None:
        state = make_state(nodes, revision=revision, server=SERVER, network="10.99.0.0/24",  # type: ignore[arg-type]
                           pool=("10.99.0.100", "10.99.0.149"), **kwargs)  # type: ignore[arg-type]
        self.holder.swap(Generation(revision=revision, state=state, files={}))


def start(lab: Lab, tmp: Path, mode: str = "full", nodes: tuple[object, ...] = NODES) -> Served:
    holder = GenerationHolder()
    events = CollectEvents()
    leases = LeaseStore(tmp / "leases.sqlite3")
    server = DhcpServer(listen=("0.0.0.0", 67), holder=holder, events=events, leases=leases)
    served = Served(lab, server, holder, events, leases, tmp)
    served.swap("rev1", nodes, mode=mode)
    lab.call_in(lab.server, server.start)
    return served


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    require_root()
    lab = Lab()
    try:
        s = start(lab, tmp_path_factory.mktemp("dhcp"))
        yield s
        s.server.stop()
        s.leases.close()
    finally:
        lab.close()


def script(tmp: Path, name: str, body: str) -> Path:
    path = tmp / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def read_env(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        out[key] = value.strip("'")
    return out


def udhcpc(s: Served, ns: str, *extra: str) -> dict[str, str]:
    busybox = require_tool("busybox", "busybox-static")
    out = s.tmp / f"udhcpc-{ns}.env"
    prog = script(s.tmp, f"udhcpc-{ns}.sh", f'[ "$1" = bound ] && env > {out}\nexit 0\n')
    s.lab.run(ns, busybox, "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "5", "-T", "1",
              "-s", str(prog), *extra, timeout=30)
    assert out.exists(), f"udhcpc in {ns} got no lease"
    return read_env(out)


def test_dhclient_gets_its_reserved_address(served: Served) -> None:
    dhclient = require_tool("dhclient", "isc-dhcp-client")
    ns = served.client("52:54:00:d1:00:01")
    out = served.tmp / "dhclient.env"
    prog = script(served.tmp, "dhclient.sh", f'[ "$reason" = BOUND ] && env > {out}\nexit 0\n')
    conf = served.tmp / "dhclient.conf"
    conf.write_text("timeout 20;\nrequest subnet-mask, routers, domain-name-servers, host-name, domain-name;\n")
    proc = served.lab.popen(ns, dhclient, "-4", "-d", "-1", "-cf", str(conf), "-sf", str(prog),
                            "-lf", str(served.tmp / "dhclient.leases"), "-pf", str(served.tmp / "dhclient.pid"),
                            "eth0", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(out.exists, 25), "dhclient got no lease"
    finally:
        proc.terminate()
        proc.wait(10)
    env = read_env(out)
    assert env["new_ip_address"] == "10.99.0.21"
    assert env["new_subnet_mask"] == "255.255.255.0"
    assert env["new_routers"] == "10.99.0.254"
    assert env["new_host_name"] == "dhclient-node"
    assert env["new_dhcp_server_identifier"] == SERVER
    assert wait_for(lambda: any(e.stage == "dhcp-ack" and e.node == "dhclient-node" for e in served.events.events))
    ack = next(e for e in served.events.events if e.stage == "dhcp-ack" and e.node == "dhclient-node")
    assert ack.revision == "rev1" and ack.mac == "52:54:00:d1:00:01" and ack.detail["ip"] == "10.99.0.21"


def test_udhcpc_as_bios_pxe_gets_undionly_over_tftp(served: Served) -> None:
    ns = served.client("52:54:00:d1:00:02")
    env = udhcpc(served, ns, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")
    assert env["ip"] == "10.99.0.22"
    assert env["boot_file"] == "undionly.kpxe"
    assert env["siaddr"] == SERVER


def test_udhcpc_as_uefi_pxe_gets_ipxe_efi_over_tftp(served: Served) -> None:
    ns = served.client("52:54:00:d1:00:03")
    env = udhcpc(served, ns, "-B", "-V", "PXEClient:Arch:00007:UNDI:003000", "-x", "0x5d:0007")
    assert env["ip"] == "10.99.0.23"
    assert env["boot_file"] == "ipxe.efi"
    assert env["siaddr"] == SERVER
    assert wait_for(lambda: any(e.stage == "dhcp-offer" and e.node == "pxe-uefi" and e.detail["arch"] == 7
                                and e.detail["filename"] == "ipxe.efi" for e in served.events.events))


def test_udhcpc_as_ipxe_gets_the_script_url_not_a_binary(served: Served) -> None:
    ns = served.client("52:54:00:d1:00:04")
    env = udhcpc(served, ns, "-V", "PXEClient:Arch:00007:UNDI:003010", "-x", "0x5d:0007", "-x", "0x4d:69505845")
    assert env["ip"] == "10.99.0.24"
    assert env["boot_file"] == SCRIPT_URL


def test_dhcpcd_gets_its_reserved_address(served: Served) -> None:
    dhcpcd = require_tool("dhcpcd", "dhcpcd-base")
    ns = served.client("52:54:00:d1:00:05")
    out = served.tmp / "dhcpcd.env"
    prog = script(served.tmp, "dhcpcd.sh", f'[ "$reason" = BOUND ] && env > {out}\nexit 0\n')
    conf = served.tmp / "dhcpcd.conf"
    conf.write_text("noipv6rs\nnoarp\n")
    # dhcpcd keeps leases and its control socket in /var/lib/dhcpcd and /run/dhcpcd: give this
    # run private tmpfs copies (`ip netns exec` runs in a mount namespace of its own). /run is
    # emptied at boot, so a fresh machine has no /run/dhcpcd to mount over until one is made.
    run = (f"mkdir -p /var/lib/dhcpcd /run/dhcpcd && "
           f"mount -t tmpfs tmpfs /var/lib/dhcpcd && mount -t tmpfs tmpfs /run/dhcpcd && "
           f"exec {dhcpcd} -4 -1 -B -t 20 -f {conf} -c {prog} eth0")
    done = served.lab.run(ns, "sh", "-c", run, timeout=30)
    assert out.exists(), f"dhcpcd got no lease (exit {done.returncode}): {done.stderr or done.stdout}"
    env = read_env(out)
    assert env["new_ip_address"] == "10.99.0.25"
    assert env["new_host_name"] == "dhcpcd-node"


def test_unknown_client_gets_a_pool_address_then_its_reservation_after_a_commit(served: Served) -> None:
    mac = "52:54:00:d1:00:99"
    ns = served.client(mac)
    env = udhcpc(served, ns, "-V", "PXEClient:Arch:00007:UNDI:003000", "-x", "0x5d:0007")
    assert IPv4Address("10.99.0.100") <= IPv4Address(env["ip"]) <= IPv4Address("10.99.0.149")
    assert "boot_file" not in env or not env["boot_file"]  # unknown_clients: ignore
    pool_ip = env["ip"]
    assert served.leases.flush()
    assert served.server.mac_for_address(pool_ip) == mac

    served.swap("rev2", (*NODES, node("late-node", mac, "10.99.0.60")))
    try:
        again = udhcpc(served, ns, "-V", "PXEClient:Arch:00007:UNDI:003000", "-x", "0x5d:0007")
        assert again["ip"] == "10.99.0.60"
        assert again["boot_file"] == "ipxe.efi"
        assert served.server.mac_for_address("10.99.0.60") == mac
        assert wait_for(lambda: any(e.stage == "dhcp-ack" and e.mac == mac and e.revision == "rev2"
                                    and e.node == "late-node" for e in served.events.events))
        # another pool lease survives the reload
        assert any(lease.ip == IPv4Address(pool_ip) for lease in served.leases.all_leases())

        served.swap("rev3", NODES)  # the reservation removed again: back to the pool
        third = udhcpc(served, ns)
        assert third["ip"] == pool_ip
    finally:
        served.swap("rev1", NODES)


def test_a_renewal_extends_the_lease_and_is_no_boot_event(served: Served) -> None:
    """udhcpc binds, configures the address, and on SIGUSR1 renews it by unicast (ciaddr set)."""
    busybox = require_tool("busybox", "busybox-static")
    mac = "02:00:00:00:bb:01"
    ns = served.client(mac)
    bound, renewed = served.tmp / "renew-bound.env", served.tmp / "renew-renew.env"
    # The file appears whole (written, then renamed): the test reads it as soon as it exists.
    prog = script(served.tmp, "renew.sh",
                  '[ "$1" = bound ] && ip addr add "$ip/24" dev "$interface"\n'
                  f'env > {served.tmp}/renew.part && mv {served.tmp}/renew.part {served.tmp}/renew-"$1".env\n'
                  'exit 0\n')
    proc = served.lab.popen(ns, busybox, "udhcpc", "-i", "eth0", "-f", "-n", "-t", "5", "-T", "1",
                            "-s", str(prog), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def acks() -> int:
        return sum(1 for e in served.events.events if e.stage == "dhcp-ack" and e.mac == mac)

    try:
        assert wait_for(bound.exists, 25), "udhcpc got no lease"
        ip = IPv4Address(read_env(bound)["ip"])
        assert wait_for(lambda: acks() == 1)
        assert served.leases.flush()
        first = served.leases.lease_of(mac)
        assert first is not None and first.ip == ip
        time.sleep(0.05)  # the renewed lease must end later than the first by the clock
        proc.send_signal(signal.SIGUSR1)
        assert wait_for(renewed.exists, 15), "udhcpc did not renew"
        assert read_env(renewed)["ip"] == str(ip)
        assert wait_for(lambda: (lease := served.leases.lease_of(mac)) is not None and lease.expires > first.expires)
        assert not wait_for(lambda: acks() > 1, 1.0), "the renewal was recorded as a boot event"
    finally:
        proc.terminate()
        proc.wait(10)


def test_off_mode_answers_nothing(served: Served) -> None:
    ns = served.client("52:54:00:d1:00:02")
    out = served.tmp / "off.env"
    prog = script(served.tmp, "off.sh", f'[ "$1" = bound ] && env > {out}\nexit 0\n')
    served.swap("rev-off", NODES, mode="off")
    try:
        served.lab.run(ns, "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "2", "-T", "1",
                       "-s", str(prog), timeout=30)
    finally:
        served.swap("rev1", NODES)
    assert not out.exists()


def test_leases_survive_a_restart(tmp_path: Path) -> None:
    require_root()
    lab = Lab()
    try:
        s = start(lab, tmp_path)
        ns = s.client("02:00:00:00:aa:01")
        env = udhcpc(s, ns)
        s.server.stop()
        s.leases.close()
        # a new server process on the same lease database
        s2 = start(lab, tmp_path)
        try:
            assert s2.server.mac_for_address(env["ip"]) == "02:00:00:00:aa:01"
            ns2 = s2.client("02:00:00:00:aa:02")
            other = udhcpc(s2, ns2)
            assert other["ip"] != env["ip"]
            again = udhcpc(s2, ns)
            assert again["ip"] == env["ip"]
        finally:
            s2.server.stop()
            s2.leases.close()
    finally:
        lab.close()


def test_server_loop_saw_no_send_errors(served: Served) -> None:
    assert served.server.stats["received"] > 0
    assert served.server.stats["send_errors"] == 0


def test_the_dhcp_port_is_never_shared_with_another_socket(tmp_path: Path) -> None:
    # Two daemons on one host both bound 127.0.0.1:<port> (SO_REUSEADDR) and split the clients'
    # packets between them. The second must fail to bind, saying which listener and why; so must
    # any other socket asking to share the port, however it asks.
    port = free_port(socket.SOCK_DGRAM)
    holder = GenerationHolder()
    holder.swap(Generation("rev1", make_state(NODES, revision="rev1", server="127.0.0.1", network="127.0.0.0/8"), {}))
    first_leases, second_leases = LeaseStore(tmp_path / "a.sqlite3"), LeaseStore(tmp_path / "b.sqlite3")
    first = DhcpServer(listen=("127.0.0.1", port), holder=holder, events=CollectEvents(), leases=first_leases)
    second = DhcpServer(listen=("127.0.0.1", port), holder=holder, events=CollectEvents(), leases=second_leases)
    first.start()
    try:
        assert first.address == ("127.0.0.1", port)
        with pytest.raises(OSError) as refused:
            second.start()
        assert refused.value.errno == errno.EADDRINUSE
        assert f"dhcp listener 127.0.0.1:{port}" in str(refused.value) and "in use" in str(refused.value)
        for option in (socket.SO_REUSEADDR, socket.SO_REUSEPORT):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                other.setsockopt(socket.SOL_SOCKET, option, 1)
                with pytest.raises(OSError) as taken:
                    other.bind(("127.0.0.1", port))
                assert taken.value.errno == errno.EADDRINUSE
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as wildcard:
            wildcard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError):
                wildcard.bind(("0.0.0.0", port))
    finally:
        first.stop(timeout=1.0)
        second.stop(timeout=1.0)
        first_leases.close()
        second_leases.close()


def test_a_long_domain_and_many_dns_servers_still_make_an_offer_udhcpc_takes(served: Served) -> None:
    # udhcpc asks for 576-byte replies (option 57) and drops a longer datagram ("oversized
    # packet"): with a 120-byte domain name and 60 DNS servers the reply needs option overload.
    domain = ".".join(["a" * 50, "b" * 50, "lab", "example"])
    dns = tuple(IPv4Address(f"10.1.0.{i}") for i in range(1, 61))
    state = make_state(NODES, revision="rev-long", server=SERVER, network="10.99.0.0/24",
                       pool=("10.99.0.100", "10.99.0.149"))
    subnet = dataclasses.replace(state.site.subnets[0], domain_name=domain, dns_servers=dns)
    state = dataclasses.replace(state, site=dataclasses.replace(state.site, subnets=(subnet,)))
    served.holder.swap(Generation(revision="rev-long", state=state, files={}))
    try:
        plain = udhcpc(served, served.client("52:54:00:d1:00:05"))
        pxe = udhcpc(served, served.client("52:54:00:d1:00:02"), "-V", "PXEClient:Arch:00000:UNDI:002001",
                     "-x", "0x5d:0000")
    finally:
        served.swap("rev1", NODES)
    # Every option arrives whole: the domain name in the `file` field, the rest in the options.
    assert plain["ip"] == "10.99.0.25"
    assert plain["domain"] == domain
    assert plain["dns"].split() == [str(ip) for ip in dns]
    assert plain["router"] == "10.99.0.254" and plain["serverid"] == SERVER
    # A PXE client's `file` field holds its boot file: the lease, the boot answer and the DNS
    # servers arrive; the domain name, least needed and fitting nowhere else, is left out.
    assert pxe["ip"] == "10.99.0.22" and pxe["boot_file"] == "undionly.kpxe" and pxe["siaddr"] == SERVER
    assert pxe["dns"].split() == [str(ip) for ip in dns]


def test_an_unrelayed_request_gets_the_subnet_of_the_link_it_came_in_on(tmp_path: Path) -> None:
    # Two directly attached links, no relay: br0 (10.99.0.1, server.address) and br1 (10.98.0.1).
    # A client on br1 must get an address, router and lease of 10.98.0.0/24, not of server.address's.
    require_root()
    lab = Lab()
    second = Subnet(network=IPv4Network("10.98.0.0/24"), pool=(IPv4Address("10.98.0.100"),
                    IPv4Address("10.98.0.149")), routers=(IPv4Address("10.98.0.254"),),
                    dns_servers=(IPv4Address("9.9.9.9"),), domain_name="b.example", lease_time=600,
                    max_lease_time=7200)
    try:
        lab.add_bridge("br1", "10.98.0.1/24")
        s = start(lab, tmp_path)
        try:
            s.holder.swap(Generation("rev2", make_state(NODES, revision="rev2", server=SERVER, network="10.99.0.0/24",
                                                        pool=("10.99.0.100", "10.99.0.149"), extra_subnets=(second,)),
                                     {}))
            far = udhcpc(s, lab.add_host("far", "02:00:00:00:bb:01", bridge="br1"))
            near = udhcpc(s, lab.add_host("near", "02:00:00:00:bb:02"))
            known = udhcpc(s, lab.add_host("known", "52:54:00:d1:00:02", bridge="br1"))
        finally:
            s.server.stop()
            s.leases.close()
    finally:
        lab.close()
    assert IPv4Address(far["ip"]) in second.network and far["router"] == "10.98.0.254"
    assert far["domain"] == "b.example"
    assert IPv4Address(near["ip"]) in IPv4Network("10.99.0.0/24") and near["router"] == "10.99.0.254"
    # A node whose reserved address is on the other link gets no address here: its reservation
    # does not belong to this link, so it is offered one from this link's pool.
    assert IPv4Address(known["ip"]) in second.network
