"""The compiled fast path and jsonschema agree on what each schema accepts."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import schema

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.text(max_size=20),
    st.sampled_from(
        [
            "52:54:00:aa:bb:01",
            "5254.00aa.bb01",
            "10.0.0.1",
            "10.0.0.300",
            "10.0.0.0/24",
            "a;b",
            "ok-1",
            "/assets/x",
            "ds=nocloud;s=x/",
            "full",
            "proxy",
            "off",
            "ignore",
            "boot",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "rack", "x y", "kernel"]), inner, max_size=3)
    ),
    max_leaves=6,
)
keys = {
    "node": ["mac", "ip", "hostname", "profile", "labels", "metadata", "reinstall", "site", "extra"],
    "site": ["server", "dhcp", "boot_files", "sites"],
    "profile": ["id", "name", "boot", "cloud_init", "install_once"],
    "profile-matchbox": ["id", "name", "boot", "cloud_id", "generic_id"],
    "group": ["id", "name", "profile", "selector", "metadata", "site"],
    "assets": ["assets"],
}


def slow_valid(data: Any, kind: str) -> bool:
    return not list(schema._validators()[kind].iter_errors(data))


@pytest.mark.parametrize("kind", sorted(keys))
def test_fast_and_slow_agree(kind: str) -> None:
    @settings(max_examples=150, deadline=None)
    @given(doc=st.dictionaries(st.sampled_from(keys[kind]), values, max_size=5))
    def check(doc: dict[str, Any]) -> None:
        assert schema.is_valid(doc, kind) == slow_valid(doc, kind), json.dumps(doc)

    check()


def test_every_schema_is_a_valid_2020_12_schema() -> None:
    for kind in schema.SCHEMA_FILES:
        jsonschema.Draft202012Validator.check_schema(json.loads(schema.schema_text(kind)))


def test_both_accept_every_document_of_the_example_repo() -> None:
    from pathlib import Path

    from reconciler.core.snapshot import kind_of
    from reconciler.core.yamldoc import parse_yaml

    root = Path(__file__).resolve().parents[2] / "example-repo"
    checked = 0
    for path in sorted(root.rglob("*.yaml")):
        rel = path.relative_to(root).as_posix()
        kind = kind_of(rel)
        if kind in (None, "cloud-init"):
            continue
        doc, _ = parse_yaml(rel, path.read_bytes())
        assert doc is not None
        assert schema.is_valid(doc.data, str(kind)) and slow_valid(doc.data, str(kind)), rel
        checked += 1
    assert checked >= 8
