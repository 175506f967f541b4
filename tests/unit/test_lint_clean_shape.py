"""core.lint.clean_shape: a rendered user-data taken as clean without being linted lints clean.

The property test builds YAML documents from pieces that put a value where the lints read it
(keys, `version`, `interactive-sections`) or where a letter changes the YAML (anchors, aliases,
tags, escapes, block scalar headers), changes runs of letters and digits of a clean one, and
checks that whenever `CleanShape.same` says "clean", `lint_user_data` finds nothing.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.lint.clean_shape import CleanShape
from reconciler.core.lint.user_data import lint_user_data
from reconciler.core.model import Location
from reconciler.core.validate import validate
from tests import repo_builder

WHERE = Location("cloud-init/autoinstall.yaml", 1, 1)

# Lines of a user-data; "{}" is filled with a word. Indented lines sit under `autoinstall:`.
PIECES = [
    "  version: {}",
    "  identity:\n    hostname: {}\n    username: ops",
    "  {}: value",
    "  storage: {{layout: {{name: {}}}}}",
    "  network:\n    addresses: [{}/24]\n    match: {{macaddress: \"{}\"}}",
    "  ssh:\n    authorized-keys:\n      - ssh-ed25519 {} ops@lab",
    "  anchored: &{} thing",
    "  aliased: *{}",
    "  tagged: !!{} thing",
    "  literal: |{}\n    text",
    "  folded: >\n    text {}\n    more",
    "  escaped: \"\\x{}\"",
    "  # a comment {}",
    "  interactive-sections: [{}]",
    "  late-commands:\n    - echo \"{}\" > /etc/x",
    "  quoted: '{}'",
    "  flow: [{}, b, {{c: {}}}]",
    "  {}-x: 1",
    "  ? {}\n  : explicit",
    "  plain: {} continued\n    on the next line",
]
TOP = ["#cloud-config", "#cloud-config\nautoinstall:", "#cloud-config\nautoinstall:\n  version: 1"]

alnum = st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True)
word = st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True) | st.sampled_from(
    ["version", "1", "2", "identity", "autoinstall", "network", "0x1", "true", "null", "", "a b", "x: y", "#", "'",
     '"', "-", "[", "{", "&a", "*a", "a", "interactive-sections", "late-commands", "~", "<<"])


@st.composite
def documents(draw: st.DrawFn, words: st.SearchStrategy[str]) -> str:
    head = draw(st.sampled_from(TOP))
    pieces = draw(st.lists(st.sampled_from(PIECES), min_size=1, max_size=6))
    body = [piece.format(*(draw(words) for _ in range(piece.count("{}")))) for piece in pieces]
    return "\n".join([head, *body]) + "\n"


@st.composite
def reference_and_variant(draw: st.DrawFn) -> tuple[str, str]:
    """A document, and the same with some of its runs of letters and digits replaced: mostly by
    other such runs (what `same` may accept), sometimes by anything."""
    reference = draw(documents(draw(st.sampled_from([word, alnum]))))
    runs = list(re.finditer(r"[A-Za-z0-9]+", reference))
    variant, last = [], 0
    for run in runs:
        variant.append(reference[last:run.start()])
        changed = draw(st.booleans()) and draw(st.booleans())
        variant.append(draw(alnum | word) if changed else run.group())
        last = run.end()
    variant.append(reference[last:])
    return reference, "".join(variant)


@settings(max_examples=800, deadline=None)
@given(reference_and_variant(), st.booleans())
def test_a_text_taken_as_clean_lints_clean(pair: tuple[str, str], autoinstall: bool) -> None:
    reference, variant = pair
    if lint_user_data(reference, WHERE, autoinstall):
        return  # only a clean text is a reference
    shape = CleanShape.of(reference)
    assert shape is not None
    assert shape.same(reference)
    if shape.same(variant):
        assert lint_user_data(variant, WHERE, autoinstall) == []


TEMPLATE = """\
#cloud-config
autoinstall:
  version: 1
  identity:
    hostname: {host}
    username: ops
  network:
    match: {{macaddress: "{mac}"}}
    addresses: [{ip}/24]
  {key}: value
  &{anchor} anchored: 1
"""


def text(host: str = "n00001", mac: str = "52:54:00:00:00:01", ip: str = "10.0.0.1", key: str = "storage",
         anchor: str = "a") -> str:
    return TEMPLATE.format(host=host, mac=mac, ip=ip, key=key, anchor=anchor)


def test_values_may_differ_but_keys_anchors_and_layout_may_not() -> None:
    assert lint_user_data(text(), WHERE, True) == []
    shape = CleanShape.of(text())
    assert shape is not None
    assert shape.same(text(host="web17", mac="52:54:aa:bb:cc:ff", ip="10.200.3.250"))
    assert not shape.same(text(key="identity"))  # a key: now a duplicate
    assert not shape.same(text(anchor="b"))  # an anchor's name
    assert not shape.same(text(host="n 1"))  # a space: another token
    assert not shape.same(text(host="n1\n  x: 1"))  # another line
    assert not shape.same(text().replace("version: 1", "version: 2"))  # a value the lints read


def test_a_reference_with_a_line_break_libyaml_counts_is_not_used() -> None:
    assert CleanShape.of(text().replace("username: ops", "username: ops\r")) is None


USER_DATA = """\
#cloud-config
autoinstall:
  version: 1
  identity:
    hostname: {{ hostname }}
  {{ labels.role }}: {}
  storage: {layout: {name: direct}}
"""


def test_a_node_whose_value_becomes_a_duplicate_key_is_still_found() -> None:
    """Nodes render the same template; the first lints clean, a later one writes a key twice
    (its label is a key): the finding is there, as when every node's text was linted."""
    nodes = {f"nodes/w{i}.yaml": f"mac: 52:54:00:aa:cc:0{i}\nip: 10.10.10.20{i}\nprofile: install\n"
             f"labels: {{role: {role}}}\n" for i, role in ((1, "web"), (2, "db"), (3, "storage"), (4, "dns"))}
    edits: dict[str, str | None] = {"cloud-init/autoinstall.yaml": USER_DATA, "nodes/node-1.yaml": None,
                                     "nodes/node-2.yaml": None, **nodes}
    issues = validate(repo_builder.snapshot(edits)).issues
    assert not [i for i in issues if i.is_error and i.code != "user-data-duplicate-key"]
    found = [(i.code, i.message) for i in issues if i.code == "user-data-duplicate-key"]
    assert found == [("user-data-duplicate-key", "key 'storage' (rendered lines 6 and 7) is written twice: "
                      + found[0][1].split(": ", 1)[1])]


# Where a node's label lands in its user-data: a value, a key, an anchor, a tag, the version...
PLACES = ["  plain: {{ labels.x }}", "  {{ labels.x }}: 1", "  quoted: \"{{ labels.x }}\"",
          "  anchored: &{{ labels.x }} v", "  tagged: !{{ labels.x }} v", "  version: {{ labels.x }}",
          "  flow: {a: {{ labels.x }}}", "  literal: |{{ labels.x }}\n    text", "  # {{ labels.x }}",
          "  interactive-sections: [{{ labels.x }}]", "  seq:\n  - {{ labels.x }}"]
LABEL = st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True) | st.sampled_from(
    ["version", "storage", "1", "2", "true", "identity", "early-commands", "autoinstal", "a-b", "a.b", "x:y"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(PLACES), min_size=1, max_size=4, unique=True),
       st.lists(LABEL, min_size=2, max_size=6))
def test_validation_finds_what_linting_every_node_finds(places: list[str], labels: list[str]) -> None:
    """The same repository validated as is and with every user-data linted (the reference never
    used): the same findings, in the same order."""
    user_data = "#cloud-config\nautoinstall:\n  version: 1\n  storage: {}\n" + "\n".join(places) + "\n"
    nodes = {f"nodes/w{i}.yaml": f"mac: 52:54:00:aa:cc:{i:02x}\nip: 10.10.10.{201 + i}\nprofile: install\n"
             f"labels: {{x: '{label}'}}\n" for i, label in enumerate(labels)}
    edits: dict[str, str | None] = {"cloud-init/autoinstall.yaml": user_data, "nodes/node-1.yaml": None,
                                     "nodes/node-2.yaml": None, **nodes}
    snapshot = repo_builder.snapshot(edits)
    fast = validate(snapshot).issues
    assert not [i for i in fast if i.file.startswith("nodes/")]  # the nodes are fine: the user-data is at stake
    same = CleanShape.same
    try:
        CleanShape.same = lambda self, text: False  # type: ignore[method-assign]
        slow = validate(snapshot).issues
    finally:
        CleanShape.same = same  # type: ignore[method-assign]
    assert fast == slow
