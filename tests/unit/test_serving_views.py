"""The DHCP plan a generation derives on activation (protocol.dhcp_decide.DhcpPlan) made from the
previous generation's plan plus the changed nodes (issue 25) equals the plan built from scratch,
over random sequences of commits: node fields changed (MAC, address, hostname, profile), nodes
added and deleted, profiles' own `secure_boot`, the site's subnets and cloud-init template; and
the boot index and DHCP plan patched with the changed nodes the daemon passes on activation."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.boot import BootIndex
from reconciler.core.model import DesiredState, Node
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import validate
from reconciler.daemon.resident import _same
from reconciler.generation import Generation, GenerationHolder
from reconciler.protocol.dhcp_decide import DhcpPlan, plan_dhcp
from tests.render_support import example_snapshot

_PROFILES = ("ubuntu-2204-install", "ubuntu-2404-install", "local-disk")
_EDIT = st.tuples(st.sampled_from(["ip", "no-ip", "hostname", "profile", "mac", "add", "delete", "secure", "subnet",
                                   "template", "nothing"]), st.integers(0, 40))


def _apply(files: dict[str, bytes], kind: str, i: int) -> None:
    nodes = sorted(p for p in files if p.startswith("nodes/"))
    path = nodes[i % len(nodes)] if nodes else None
    text = files[path].decode() if path else ""

    def field(name: str, value: str | None) -> None:
        assert path is not None
        lines = [line for line in text.splitlines() if not line.startswith(f"{name}:")]
        files[path] = "\n".join(lines + ([f"{name}: {value}"] if value is not None else [])).encode() + b"\n"

    if kind == "ip" and path:
        field("ip", f"10.10.10.{201 + i % 30}")
    elif kind == "no-ip" and path:
        field("ip", None)
    elif kind == "hostname" and path:
        field("hostname", f"h{i}")
    elif kind == "profile" and path:
        field("profile", _PROFILES[i % 3])
    elif kind == "mac" and path:
        field("mac", f"52:54:00:aa:cc:{i:02x}")
    elif kind == "add":
        files[f"nodes/x{i}.yaml"] = (f"mac: 52:54:00:aa:dd:{i:02x}\nprofile: {_PROFILES[i % 3]}\n"
                                     "metadata: {ssh_authorized_keys: [ssh-ed25519 AAAA ops@lab]}\n").encode()
    elif kind == "delete" and path and len(nodes) > 1:
        del files[path]
    elif kind == "secure":
        profile = f"profiles/{_PROFILES[i % 3]}.yaml"
        body = b"\n".join(x for x in files[profile].splitlines() if not x.startswith(b"secure_boot:"))
        files[profile] = body + (b"\nsecure_boot: true\n" if i % 2 else b"\n")
    elif kind == "subnet":
        files["netboot.yaml"] = files["netboot.yaml"].replace(b"lease_time: 600", f"lease_time: {600 + i}".encode())
    elif kind == "template":
        name = "cloud-init/ubuntu-autoinstall.yaml"
        plain, secret = b'"$6$plain"', b'"{{ secrets.root_password_hash }}"'
        files[name] = files[name].replace(secret, plain) if i % 2 else files[name].replace(plain, secret)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.lists(_EDIT, min_size=1, max_size=3), min_size=1, max_size=8))
def test_a_plan_patched_from_the_previous_generation_equals_the_plan_built_whole(
        steps: list[list[tuple[str, int]]]) -> None:
    files = dict(example_snapshot("0" * 40).files)
    plan: tuple[DhcpPlan, DesiredState] | None = None
    for n, edits in enumerate(steps, start=1):
        for kind, i in edits:
            _apply(files, kind, i)
        state = validate(Snapshot(f"{n:040x}", dict(files))).state
        if state is None:
            continue
        built = plan_dhcp(state)
        patched = plan_dhcp(state, plan) if plan is not None else built
        assert patched == built
        plan = (patched, state)


def test_a_swapped_in_generation_keeps_the_unchanged_nodes_reservations() -> None:
    """What the holder does on activation: the new plan reuses the previous one's objects."""
    files = dict(example_snapshot("1" * 40).files)
    holder = GenerationHolder()
    first = validate(Snapshot("1" * 40, dict(files))).state
    assert first is not None
    holder.swap(Generation(first.revision, first, {}))
    files["nodes/node-2.yaml"] = files["nodes/node-2.yaml"].replace(b"hostname: node-2", b"hostname: renamed")
    second = validate(Snapshot("2" * 40, dict(files))).state
    assert second is not None
    previous = holder.swap(Generation(second.revision, second, {}))
    current = holder.current()
    assert previous is not None and current is not None
    before, after = previous.dhcp_plan.reservations, current.dhcp_plan.reservations
    assert after["52:54:00:aa:bb:01"] is before["52:54:00:aa:bb:01"]
    assert after["52:54:00:aa:bb:02"].hostname == "renamed"
    assert current.dhcp_plan == plan_dhcp(second) and current.boot_index == BootIndex.build(second)


def _changed(before: DesiredState, after: DesiredState) -> list[tuple[Node, Node]] | None:
    """What the daemon passes on activation (daemon.steps): the nodes that differ, when the node
    names and their order are the same (else None: nothing is passed)."""
    if [n.name for n in before.nodes] != [n.name for n in after.nodes]:
        return None
    return [(b, a) for b, a in zip(before.nodes, after.nodes, strict=True) if not _same(b, a)]


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.lists(_EDIT, min_size=1, max_size=3), min_size=1, max_size=8))
def test_views_patched_with_the_changed_nodes_equal_the_views_built_whole(
        steps: list[list[tuple[str, int]]]) -> None:
    files = dict(example_snapshot("0" * 40).files)
    holder = GenerationHolder()
    for n, edits in enumerate(steps, start=1):
        for kind, i in edits:
            _apply(files, kind, i)
        state = validate(Snapshot(f"{n:040x}", dict(files))).state
        if state is None:
            continue
        current = holder.current()
        holder.swap(Generation(state.revision, state, {}), _changed(current.state, state) if current else None)
        served = holder.current()
        assert served is not None
        index, whole = served.boot_index, BootIndex.build(state)
        assert index == whole
        assert list(index.by_mac.items()) == list(whole.by_mac.items())
        assert list(index.by_ip.items()) == list(whole.by_ip.items())
        plan, built = served.dhcp_plan, plan_dhcp(state)
        assert plan == built and list(plan.reservations.items()) == list(built.reservations.items())


def test_a_node_leaving_and_taking_back_a_profile_with_secrets_moves_its_user_data_in_the_private_paths() -> None:
    """The boot index patched with one changed node (`Generation.warm`): the node's user-data path
    leaves the private paths when its new profile's template names no secret, and comes back."""
    files = dict(example_snapshot("0" * 40).files)
    holder = GenerationHolder()
    before = validate(Snapshot("1" * 40, dict(files))).state
    assert before is not None
    holder.swap(Generation(before.revision, before, {}))
    path = "cloud-init/52:54:00:aa:bb:01/user-data"
    assert path in holder.current().boot_index.private  # type: ignore[union-attr]
    for n, profile in enumerate(("local-disk", "ubuntu-2204-install"), start=2):
        files["nodes/node-1.yaml"] = files["nodes/node-1.yaml"].replace(
            b"profile: ubuntu-2204-install" if profile == "local-disk" else b"profile: local-disk",
            f"profile: {profile}".encode())
        state = validate(Snapshot(f"{n:040x}", dict(files))).state
        assert state is not None
        changed = _changed(before, state)
        assert changed is not None and [b.name for b, _ in changed] == ["node-1"]
        holder.swap(Generation(state.revision, state, {}), changed)
        served = holder.current()
        assert served is not None and served.boot_index == BootIndex.build(state)
        assert (path in served.boot_index.private) == (profile != "local-disk")
        before = state
