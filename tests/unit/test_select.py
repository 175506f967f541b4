"""matchbox group selection: order, matching and MAC spelling, as matchbox behaves."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.model import Group
from reconciler.core.select import SelectorIndex, matches, normalise_mac, select_group, selector_string, sort_groups


def group(gid: str, **selector: str) -> Group:
    return Group(id=gid, name=gid, profile=f"p-{gid}", selector=selector)


def test_trial_order_is_matchboxs_reversed_byreqs() -> None:
    # matchbox storagepb TestGroupSort: ascending ByReqs is one, two (region=a), dual (region=b);
    # SelectGroup walks it reversed.
    one = group("one", region="a")
    two = group("two", region="a", zone="z")
    dual = group("dual", region="b", zone="z")
    default = group("default")
    assert [g.id for g in sort_groups([one, two, default, dual])] == ["dual", "two", "one", "default"]


def test_tie_between_equal_counts_goes_to_the_greater_selector_string() -> None:
    by_rack = group("a-rack", rack="r1")
    by_role = group("z-role", role="db")
    labels = {"rack": "r1", "role": "db"}
    # "role=db" > "rack=r1", whatever the ids say
    chosen = select_group(sort_groups([by_rack, by_role]), labels)
    assert chosen is not None and chosen.id == "z-role"


def test_selector_string() -> None:
    assert selector_string({"c": "d", "a": "b"}) == "a=b,c=d"


def test_labels_may_carry_more_than_the_selector() -> None:
    assert matches({"uuid": "a"}, {"uuid": "a", "mac": "b"})
    assert not matches({"uuid": "a", "mac": "b"}, {"uuid": "a"})


def test_default_group_matches_anything_and_comes_last() -> None:
    ordered = sort_groups([group("default"), group("x", os="installed")])
    chosen = select_group(ordered, {"mac": "52:54:00:00:00:01"})
    assert chosen is not None and chosen.id == "default"


def test_mac_spellings() -> None:
    for text in ("52-DA-00-89-D8-10", "52:da:00:89:d8:10", "52da.0089.d810", "52DA0089D810"):
        assert normalise_mac(text) == "52:da:00:89:d8:10"
    assert normalise_mac("not-a-mac") is None


_KEYS = st.sampled_from(["rack", "role", "mac", "zone"])
_VALUES = st.sampled_from(["r1", "r2", "db", "web", "52:54:00:aa:bb:01", "z"])


@given(st.lists(st.dictionaries(_KEYS, st.one_of(_VALUES, st.just(1))), max_size=8),
       st.dictionaries(_KEYS, _VALUES))
def test_the_selector_index_finds_the_groups_trying_each_finds(selectors: list[dict[str, Any]],
                                                                  labels: dict[str, str]) -> None:
    """core.select.SelectorIndex (crossref's per-node group lookup) == trying every group, in order."""
    groups = [Group(id=f"g{i}", name=f"g{i}", profile="p", selector=sel) for i, sel in enumerate(selectors)]
    assert SelectorIndex(groups).matching(labels) == [g for g in groups if matches(g.selector, labels)]
