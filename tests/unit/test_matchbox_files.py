"""matchbox's JSON groups and profiles read as matchbox reads them, and groups that are one machine.

Each test names the matchbox code or test it mirrors (github.com/poseidon/matchbox).
"""

from __future__ import annotations

from reconciler.core import boot
from reconciler.core.model import Issue
from reconciler.core.render import render_generation
from reconciler.core.validate import Validation, validate
from reconciler.protocol.dhcp_decide import plan_dhcp
from tests import repo_builder

PINNED_MAC = "52:54:00:aa:bb:07"


def _validate(edits: dict[str, str | None]) -> Validation:
    return validate(repo_builder.snapshot(edits))


def _codes(issues: tuple[Issue, ...]) -> set[tuple[str, str]]:
    return {(i.code, i.severity.value) for i in issues}


def test_a_groups_id_is_read_from_inside_the_file() -> None:
    """matchbox/storage/filestore.go GroupList reads every groups/*.json through
    storagepb.ParseGroup, whose id is the file's `id` (storagepb group_test.go TestGroupParse);
    matchbox's own examples/groups/flatcar-install/install.json holds `"id": "stage-0"`."""
    result = _validate({"groups/install.json": '{"id": "stage-0", "profile": "local", "selector": {"os": "x"}}\n'})
    assert result.state is not None, result.errors
    assert "stage-0" in {g.id for g in result.state.groups}
    assert ("group-id-differs", "warning") in _codes(result.issues)
    assert render_generation(result.state)["groups/stage-0.json"].startswith(b'{"id": "stage-0"')


def test_a_profiles_id_must_still_be_its_file_name() -> None:
    """matchbox's ProfileGet(id) reads profiles/<id>.json: a profile is found by its file name."""
    result = _validate({"profiles/other.json": '{"id": "local", "boot": {}}\n'})
    assert ("profile-id-mismatch", "error") in _codes(result.issues)


def test_unknown_fields_of_matchbox_json_are_warnings() -> None:
    """matchbox decodes groups and profiles with encoding/json, which ignores fields it does not
    know (storagepb.ParseGroup, filestore.go ProfileGet): older matchbox files carry some."""
    result = _validate({
        "groups/old.json": '{"id": "old", "profile": "local", "selector": {"os": "x"}, "requirements": {"a": "b"}}\n',
        "profiles/old.json": '{"id": "old", "boot": {"kernel": "/assets/k", "cmdline": {"a": ""}}, "extra": 1}\n',
    })
    assert result.state is not None, result.errors
    unknown = sorted((i.file, i.line) for i in result.issues if i.code == "matchbox-unknown-field")
    assert unknown == [("groups/old.json", 1), ("profiles/old.json", 1), ("profiles/old.json", 1)]
    assert all(not i.is_error for i in result.issues if i.code == "matchbox-unknown-field")


def test_metadata_keys_with_dashes_are_accepted_and_printed_as_matchbox_prints_them() -> None:
    """storagepb group_test.go's group has metadata `{"some-key": "some-val"}`; metadata.go
    `renderAsEnvFile` upper-cases the key and nothing else."""
    result = _validate({"groups/g.json": '{"id": "g", "profile": "local", "selector": {"os": "x"}, '
                                         '"metadata": {"some-key": "v", "nest": {"b-c": 1, "l": [1], "n": null}}}\n'})
    assert result.state is not None, result.errors
    files = render_generation(result.state)
    index = boot.BootIndex.build(result.state)
    answer = boot.answer_boot("metadata", index, files, {"os": "x"}, "os=x")
    lines = answer.body.decode().splitlines()
    assert {"SOME-KEY=v", "NEST_B-C=1", "OS=x"} <= set(lines)
    assert not any(line.startswith(("NEST_L", "NEST_N")) for line in lines)


def test_a_mac_selector_key_in_any_case_is_a_mac() -> None:
    """storagepb group_test.go TestNormalize: `{"MAC": "52-DA-00-89-D8-10"}` is normalised to
    `52:da:00:89:d8:10`; the bootstrap's `mac=52-da-00-89-d8-10` then selects the group."""
    result = _validate({"groups/g.json": '{"id": "g", "profile": "local", '
                                         '"selector": {"MAC": "52-DA-00-89-D8-10", "os": "installed"}}\n'})
    assert result.state is not None, result.errors
    index = boot.BootIndex.build(result.state)
    labels = boot.labels_from_query("mac=52-da-00-89-d8-10&os=installed")
    target = boot.select_target(index, labels)
    assert target is not None and target.group is not None and target.group.id == "g"


def test_json_profiles_take_our_extensions() -> None:
    """A matchbox Ubuntu profile needs no rewrite: `cloud_init` and `install_once` in JSON."""
    profile = ('{"id": "ubuntu", "boot": {"kernel": "/assets/vmlinuz", "initrd": ["/assets/initrd"], '
               '"args": ["autoinstall", "ip=dhcp", "ds=nocloud;s={{ cloud_init_url }}"]}, '
               '"cloud_init": "autoinstall", "install_once": true}\n')
    node = "mac: 52:54:00:aa:bb:01\nprofile: ubuntu\n"
    result = _validate({"profiles/ubuntu.json": profile, "nodes/node-1.yaml": node})
    assert result.state is not None, result.errors
    assert result.state.profiles["ubuntu"].cloud_init == "autoinstall"
    assert result.state.profiles["ubuntu"].install_once is True


def test_a_group_pinning_a_mac_is_one_machine_with_a_nodes_values_and_seed() -> None:
    """matchbox repositories write one group per machine (`"selector": {"mac": ...}`, as in
    examples/groups/bootkube/node1.json): it gets the node template values and NoCloud seed."""
    group = f'{{"id": "node7", "name": "Node 7", "profile": "install", "selector": {{"mac": "{PINNED_MAC}"}}}}\n'
    result = _validate({"groups/node7.json": group})
    assert result.state is not None, result.errors
    assert "group-profile-needs-node" not in {i.code for i in result.issues}
    node = result.state.node_by_mac(PINNED_MAC)
    assert node is not None and node.name == "node7" and node.profile == "install"
    files = render_generation(result.state, b"secret")
    script = files["ipxe/node7.ipxe"].decode()
    assert f"/cloud-init/{PINNED_MAC}/" in script
    assert f"cloud-init/{PINNED_MAC}/user-data" in files
    index = boot.BootIndex.build(result.state)
    answer = boot.answer_boot("ipxe", index, files, boot.labels_from_query("mac=52-54-00-aa-bb-07"), "")
    assert answer.status == 200 and answer.node is not None and answer.node.name == "node7"
    # a known machine to the DHCP server too: with `unknown_clients: ignore` it is still netbooted
    reservation = plan_dhcp(result.state).reservations.get(PINNED_MAC)
    assert reservation is not None and reservation.node == "node7" and reservation.ip is None


def test_a_cloud_init_profile_with_a_static_seed_url_is_a_warning() -> None:
    """matchbox profiles give a fixed `ds=nocloud;s=http://.../` URL; ours serve the profile's
    `cloud_init` template only at `{{ cloud_init_url }}`, so with a fixed URL it is never served."""
    profile = repo_builder.BASE["profiles/install.yaml"].replace(
        '"ds=nocloud;s={{ cloud_init_url }};dsmode=net"', '"ds=nocloud;s=http://10.10.10.12/seeds/;dsmode=net"'
    )
    result = _validate({"profiles/install.yaml": profile})
    found = [i for i in result.issues if i.code == "cloud-init-seed-static"]
    assert [(i.file, i.line, i.severity.value) for i in found] == [("profiles/install.yaml", 10, "warning")]
