"""The site-wide DHCP configs rendered from kept per-node chunks (core.render.chunks, issue 25)
are byte for byte what rendering every node gives, over random sites and random sequences of
node edits; Kea's is what json.dumps(indent=2) writes for its configuration."""

from __future__ import annotations

import dataclasses
import json
from ipaddress import IPv4Address, IPv4Network

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.model import Node, Subnet
from reconciler.core.render import dhcpd, dnsmasq, kea
from reconciler.core.render.chunks import Chunks
from tests.render_support import example_state

_SITE = example_state().site
_SUBNETS = (Subnet(IPv4Network("10.1.0.0/24"), (IPv4Address("10.1.0.100"), IPv4Address("10.1.0.200")),
                   (IPv4Address("10.1.0.1"),), domain_name="a.example"),
            Subnet(IPv4Network("10.2.0.0/24"), None, lease_time=60))
_NAME = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
_HOSTNAME = st.one_of(_NAME, st.sampled_from(["ignore", "12h", "infinite", "5"]))
_IP = st.one_of(st.none(), st.builds(lambda net, host: IPv4Address(f"10.{net}.0.{host}"),
                                     st.integers(1, 3), st.integers(2, 250)))


@st.composite
def _nodes(draw: st.DrawFn) -> list[Node]:
    names = draw(st.lists(_NAME, max_size=8, unique=True))
    return [Node(name, f"52:54:00:00:{i >> 8:02x}:{i & 0xFF:02x}", "p", draw(_HOSTNAME), draw(_IP))
            for i, name in enumerate(names)]


@settings(max_examples=60, deadline=None)
@given(commits=st.lists(_nodes(), min_size=1, max_size=6), subnets=st.integers(0, 2),
       other=st.lists(st.sampled_from(["52:54:00:00:00:00", "52:54:00:00:00:01"]), max_size=2, unique=True))
def test_configs_from_kept_chunks_equal_configs_rendered_whole(commits: list[list[Node]], subnets: int,
                                                               other: list[str]) -> None:
    site = dataclasses.replace(_SITE, subnets=_SUBNETS[:subnets])
    cache: Chunks = {}
    for i, nodes in enumerate(commits):
        revision = f"{i:040x}"
        for module in (dhcpd, kea, dnsmasq):
            assert module.render(site, nodes, revision, other, cache) == module.render(site, nodes, revision, other)
        whole = json.dumps(kea.config(site, nodes, revision, other), indent=2, sort_keys=False) + "\n"
        assert kea.render(site, nodes, revision, other).decode() == whole
