"""Nodes as the daemon gets them from its worker: pickled in chunks, unpickled (issue 25, memory).

The daemon holds every node of the site, each unpickled from the worker's pipe; a node unpickled
must be the node pickled (equal, its Location hashing the same), and share with the
other nodes the strings they repeat (label keys and values, the profile, metadata's keys and
strings), which pickle alone shares only within one message.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from ipaddress import IPv4Address

from reconciler.core.model import Bmc, Location, Node


def parsed(text: str) -> str:
    """A string as a parser makes it: a new object, not the interned literal."""
    return text.encode().decode()


def node(i: int, **fields: object) -> Node:
    values: dict[str, object] = {
        "name": f"n{i:05d}", "mac": f"52:54:00:00:{i:02x}:01", "profile": parsed("ubuntu-2404-install"),
        "hostname": fields.pop("hostname", None), "ip": IPv4Address(f"10.0.1.{i + 1}"),
        "labels": {parsed("rack"): parsed(f"r{i % 2}"), parsed("role"): parsed("worker")},
        "metadata": {parsed("ssh_authorized_keys"): [parsed("ssh-ed25519 AAAAC3Nza ops@lab.example")],
                     parsed("disks"): [{parsed("size"): 10, parsed("wipe"): True}]},
        "reinstall": 1, "source": Location(f"nodes/n{i:05d}.yaml", 1, 1), "site": parsed("dc1"),
    }
    values.update(fields)
    values["hostname"] = values["hostname"] or values["name"]  # no `hostname:`: the name itself (core.build)
    return Node(**values)  # type: ignore[arg-type]


def through_pipe(nodes: list[Node]) -> list[Node]:
    """One message a node, as the worker's chunks are separate messages."""
    return [pickle.loads(pickle.dumps([n], pickle.HIGHEST_PROTOCOL))[0] for n in nodes]


def test_a_node_unpickled_is_the_node_pickled() -> None:
    nodes = [node(1), node(2, bmc=Bmc("redfish", "10.9.0.1", None, "lab")), node(3, ip=None, site=None, labels={}),
             node(4, hostname=parsed("other-name"), metadata={1: parsed("x"), parsed("k"): (1, 2), None: 1.5})]
    for before, after in zip(nodes, through_pipe(nodes), strict=True):
        assert after == before
        assert through_pipe([after]) == [before]
        assert hash(after.source) == hash(before.source) and after.source == before.source
        assert list(after.metadata) == list(before.metadata)  # key order kept
    assert copy.copy(nodes[0]) == nodes[0]
    assert dataclasses.replace(nodes[0], name="n9").name == "n9"


def test_nodes_unpickled_apart_share_the_strings_they_repeat() -> None:
    first, second = through_pipe([node(1), node(3)])
    assert first.labels["role"] is second.labels["role"]
    assert first.labels["rack"] is second.labels["rack"]  # r1 both
    assert next(iter(first.labels)) is next(iter(second.labels))
    assert first.profile is second.profile and first.site is second.site
    assert first.metadata["ssh_authorized_keys"][0] is second.metadata["ssh_authorized_keys"][0]
    assert next(iter(first.metadata["disks"][0])) is next(iter(second.metadata["disks"][0]))
    assert first.hostname is first.name  # as the node file left it: no `hostname:`
    assert not hasattr(first, "__dict__") and not hasattr(first.source, "__dict__")


def test_metadata_that_holds_itself_is_unpickled() -> None:
    """YAML anchors can share a value or make a cycle; unpickling keeps both."""
    shared = [parsed("a")]
    cyclic: dict[str, object] = {parsed("x"): shared, parsed("y"): shared}
    cyclic[parsed("self")] = cyclic
    after = through_pipe([node(1, metadata=cyclic)])[0]
    assert after.metadata["self"] is after.metadata
    assert after.metadata["x"] is after.metadata["y"] == ["a"]
