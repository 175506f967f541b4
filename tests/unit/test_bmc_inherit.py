"""A node's `bmc:` inherited from the groups selecting it (core.bmcinherit, through validation)."""

from __future__ import annotations

from reconciler.core.model import Bmc
from reconciler.core.validate import Validation, validate
from tests import repo_builder

NODE_1 = "mac: 52:54:00:aa:bb:01\nip: 10.10.10.201\nprofile: install\nlabels: {rack: r1}\n"
NODE_2 = "mac: 52:54:00:aa:bb:02\nip: 10.10.10.202\nprofile: install\nlabels: {rack: r2}\n"


def _validate(edits: dict[str, str | None]) -> Validation:
    return validate(repo_builder.snapshot(edits))


def _bmcs(result: Validation) -> dict[str, Bmc | None]:
    assert result.state is not None, result.errors
    return {n.name: n.bmc for n in result.state.nodes}


def test_a_group_gives_driver_and_credentials_and_the_node_its_address() -> None:
    result = _validate({
        "groups/rack1.yaml": "profile: install\nselector: {rack: r1}\nbmc: {driver: ipmi, credentials: lab}\n",
        "nodes/node-1.yaml": NODE_1 + "bmc: {address: '10.0.0.1:6230'}\n",
        "nodes/node-2.yaml": NODE_2,
    })
    assert _bmcs(result) == {"node-1": Bmc("ipmi", "10.0.0.1", 6230, "lab"), "node-2": None}


def test_the_node_s_own_fields_win_and_the_most_specific_group_gives() -> None:
    result = _validate({
        "groups/all.yaml": "profile: install\nselector: {rack: r1}\nbmc: {driver: ipmi, credentials: general}\n",
        "groups/db.yaml": "profile: install\nselector: {rack: r1, role: db}\n"
                          "bmc: {driver: redfish, credentials: db-admin}\n",
        "nodes/node-1.yaml": "mac: 52:54:00:aa:bb:01\nip: 10.10.10.201\nprofile: install\n"
                             "labels: {rack: r1, role: db}\nbmc: {address: bmc-1, credentials: own}\n",
        "nodes/node-2.yaml": NODE_2,
    })
    assert _bmcs(result)["node-1"] == Bmc("redfish", "bmc-1", None, "own")


def test_an_incomplete_bmc_names_the_node_file_line_and_the_missing_field() -> None:
    result = _validate({
        "groups/rack1.yaml": "profile: install\nselector: {rack: r1}\nbmc: {driver: ipmi}\n",
        "nodes/node-1.yaml": NODE_1 + "bmc:\n  address: 10.0.0.1\n",
        "nodes/node-2.yaml": NODE_2,
    })
    errors = [(i.file, i.line, i.code) for i in result.errors]
    assert errors == [("nodes/node-1.yaml", 5, "bmc-incomplete")]
    message = result.errors[0].message
    assert "bmc has no credentials" in message and "group 'rack1' (groups/rack1.yaml)" in message
    assert "add bmc.credentials to nodes/node-1.yaml" in message


def test_a_group_alone_without_an_address_is_incomplete_for_every_node_it_selects() -> None:
    result = _validate({"groups/rack1.yaml": "profile: install\nselector: {rack: r1}\n"
                                             "bmc: {driver: ipmi, credentials: lab}\n"})
    assert sorted((i.file, i.code) for i in result.errors) == [("nodes/node-1.yaml", "bmc-incomplete"),
                                                               ("nodes/node-2.yaml", "bmc-incomplete")]
    assert all("bmc has no address" in i.message for i in result.errors)


def test_a_group_selecting_one_machine_gives_its_whole_bmc() -> None:
    result = _validate({"groups/m1.yaml": "profile: install\nselector: {mac: '52:54:00:aa:bb:09'}\n"
                                          "bmc: {driver: ipmi, address: '[fd00::9]:623', credentials: lab}\n"})
    assert _bmcs(result)["m1"] == Bmc("ipmi", "fd00::9", 623, "lab")


def test_a_bad_port_is_reported_where_the_address_was_written() -> None:
    result = _validate({
        "groups/rack1.yaml": "profile: install\nselector: {rack: r1}\n"
                             "bmc: {driver: ipmi, credentials: lab, address: 'h:70000'}\n",
    })
    assert {(i.file, i.code) for i in result.errors} == {("groups/rack1.yaml", "schema")}


def test_verify_ca_is_inherited_optional_and_checked_at_its_line() -> None:
    result = _validate({
        "groups/rack1.yaml": "profile: install\nselector: {rack: r1}\n"
                             "bmc: {driver: redfish, credentials: lab, verify_ca: /etc/netboot/bmc-ca.pem}\n",
        "nodes/node-1.yaml": NODE_1 + "bmc: {address: bmc-1}\n",
        "nodes/node-2.yaml": NODE_2 + "bmc: {driver: redfish, address: bmc-2, credentials: lab, verify_ca: false}\n",
    })
    assert _bmcs(result) == {"node-1": Bmc("redfish", "bmc-1", None, "lab", "/etc/netboot/bmc-ca.pem"),
                             "node-2": Bmc("redfish", "bmc-2", None, "lab", False)}
    result = _validate({"nodes/node-1.yaml": NODE_1 + "bmc:\n  driver: redfish\n  address: bmc-1\n"
                                             "  credentials: lab\n"})
    assert _bmcs(result)["node-1"] == Bmc("redfish", "bmc-1", None, "lab", True)  # checked against the system's CAs
    result = _validate({"nodes/node-2.yaml": NODE_2 + "bmc: {driver: redfish, address: bmc-2, credentials: lab,\n"
                                                      "  verify_ca: ca.pem}\n"})
    assert [(i.file, i.line, i.code) for i in result.errors] == [("nodes/node-2.yaml", 6, "schema")]
    assert "bmc.verify_ca: 'ca.pem'" in result.errors[0].message
