"""secrets.still_yaml answers as cloud-init's own load would (issue 25).

cloud-init loads user-data with `util.load_yaml`: the bytes decoded as UTF-8, then PyYAML's
`yaml.safe_load`, whose SafeLoader is pure Python; any error drops the user-data. still_yaml asks
libyaml first (~10x faster), so it must agree with that load on every text: where libyaml and
SafeLoader disagree, SafeLoader decides; and it runs SafeLoader's constructor only on what its
own walk over libyaml's nodes cannot decide. Differential: generated YAML-ish texts (tabs, odd
indentation, quotes, colons, comments, unicode, duplicate keys, anchors, directives, control
characters), generated trees (tags, anchors, aliases, cycles, dates SafeLoader cannot make, merge
keys, collection keys), what construction decides, one by one, and realistic cloud-config with
secret values put in every kind of place.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import secrets
from reconciler.core.errors import InvalidRevision
from reconciler.core.render import render_served
from reconciler.core.secrets import still_yaml
from reconciler.core.validate import validate
from tests.unit.test_secrets import TEMPLATE, identity, snapshot


def cloud_init_loads(user_data: bytes) -> bool:
    """What cloud-init does with user-data (util.load_yaml), less its check of the root's type."""
    try:
        yaml.load(user_data.decode("utf-8"), Loader=yaml.SafeLoader)
    except Exception:  # YAMLError, ValueError (a date like 2001-02-30), UnicodeDecodeError, ...
        return False
    return True


def cloud_config(text: str) -> bytes:
    return ("#cloud-config\n" + text).encode("utf-8", "surrogatepass")


# Pieces that exercise where the two parsers' scanners differ (found so: tabs, a byte order
# mark, `|#`, `?` in a flow collection) and what construction refuses (dates, !!binary, keys).
PIECES = [
    "a", "key", "b: ", ": ", ":", "- ", "-", " ", "  ", "    ", "\n", "\n  ", "\n- ", "\n\n", "\r", "\r\n",
    "\t", " \t", "\t- ", "'", "''", '"', '\\"', "#", " #", "  #c\n", "&x ", "&x", "*x", "*x ", "<<: ", "<<",
    "%YAML 1.1\n", "%YAML 1.2\n", "%YAML 2.0\n", "%FOO bar\n", "%TAG ! tag:a,2000:\n", "%TAG !e! tag:e,2000:\n",
    "!e!x ", "!", "!!", "!!str ", "!!binary ", "!!map ", "!!seq ", "!!set ", "!!omap ", "!!int ", "!!float ",
    "!!timestamp ", "!<tag:yaml.org,2002:str> ", "!x!", "---", "---\n", "--- ", "...\n", "...",
    "{", "}", "[", "]", ",", "?", "? ", "?x", ":?", "|", ">", "|-", ">+", "|2", "|#", ">-#",
    "\\", "\\/", "\\t", "\\ ", "\\x41", "\\xZZ", "\\u00e9", "\\U0001F600", "\\N", "\\_", "\\L", "\\e", "\\q",
    "\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9f", "\u2028", "\u2029", "\ufeff", "\ufffe", "é", "😀", "\ue000",
    "\ud800", "2001-02-30", "2001-12-14t21:59:43.10-05:00", "2002-12-14", "0x1G", "0b101", "1:70", "1_000",
    "null", "~", "yes", ".inf", ".NaN", "0o17", "1e5", "x:y", "a:b", "k: v\n", "  k: v\n", "- a\n",
    "[a: b]", "{a: [b, {c: d}]}", "k: 1\nk: 2\n", "@", "`", "%", "=",
]
texts = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=3)), max_size=24).map("".join)


@settings(max_examples=1500, deadline=None)
@given(text=texts)
def test_generated_texts_are_judged_as_cloud_init_loads_them(text: str) -> None:
    data = cloud_config(text)
    assert still_yaml(data) == cloud_init_loads(data), data


# Whole trees, so that most texts compose and construction decides: still_yaml's walk
# (secrets._constructs) decides what SafeLoader's constructor would do for the common tags
# (str, null, bool, int, float, timestamp, binary; maps with scalar keys; seqs) and leaves
# the rest (merge keys, `=`, collection keys, !!set/!!omap/!!pairs, unknown or misplaced tags)
# to construct_document. Anchors `&a`/`&b` and aliases `*a`/`*b` make shared nodes and cycles.
SCALARS = [  # plain, so resolved to a tag as SafeLoader resolves it
    "a", "k", "x?", "2001-02-30", "2001-02-28", "2001-13-01", "2002-12-14t21:59:43.10-05:00", "2001-02-30 1:2:3",
    "'2001-02-30'", "0b_", "0x_", "0b1", "1", "-1_0", "1:70", "1.5", "1_.e", ".inf", ".NaN", "yes", "Off", "~",
    "null", "''", "=", "<<", "AAAA", "AA=A", "é", "a b", "{}", "[]",
]
TAGS = [
    *[""] * 16, "!!str ", "!!binary ", "!!set ", "!!omap ", "!!pairs ", "!!map ", "!!seq ", "!!int ",
    "!!bool ", "!!float ", "!!null ", "!!timestamp ", "!foo ", "!!merge ", "!!value ", "! ",
]
# ("scalar", (anchor, tag), value), ("alias", name), or ("seq" | "map", (anchor, tag), flow, items)
Tree = tuple[Any, ...]
props = st.tuples(st.sampled_from(["", "", "a", "b"]), st.sampled_from(TAGS))
trees = st.recursive(
    st.one_of(st.tuples(st.just("scalar"), props, st.sampled_from(SCALARS)),
              st.tuples(st.just("alias"), st.sampled_from("ab"))),
    lambda kids: st.one_of(
        st.tuples(st.just("seq"), props, st.booleans(), st.lists(kids, max_size=4)),
        st.tuples(st.just("map"), props, st.booleans(), st.lists(st.tuples(kids, kids), max_size=4)),
    ), max_leaves=16)


class Text:
    """A generated tree as YAML text, in document order: an anchor defined once, an alias only to
    one defined before it (or around it: a cycle), else most texts would not compose."""

    def __init__(self) -> None:
        self.anchors: set[str] = set()

    def props(self, anchor: str, tag: str) -> str:
        if not anchor or anchor in self.anchors:
            return tag
        self.anchors.add(anchor)
        return f"&{anchor} {tag}"

    def flow(self, node: Tree) -> str:
        if node[0] == "alias":
            return f"*{node[1]}" if node[1] in self.anchors else "a"
        pre = self.props(*node[1])
        if node[0] == "scalar":
            return pre + str(node[2])
        if node[0] == "seq":
            return f"{pre}[{', '.join(self.flow(item) for item in node[3])}]"
        return f"{pre}{{{', '.join(f'{self.flow(k)}: {self.flow(v)}' for k, v in node[3])}}}"

    def block(self, node: Tree, indent: int = 0) -> str:
        """`node` as it follows `key:` or `-`: a block collection where it may be one, else flow."""
        if node[0] in ("alias", "scalar") or node[2] or not node[3]:
            return f" {self.flow(node)}\n"
        pre = self.props(*node[1]).strip()
        lines = [f" {pre}\n" if pre else "\n"]
        pad = " " * indent
        if node[0] == "seq":
            lines += [f"{pad}-{self.block(item, indent + 2)}" for item in node[3]]
        else:
            lines += [f"{pad}{self.flow(k)}:{self.block(v, indent + 2)}" for k, v in node[3]]
        return "".join(lines)


@settings(max_examples=1000, deadline=None)
@given(tree=trees)
def test_generated_trees_are_judged_as_cloud_init_loads_them(tree: Tree) -> None:
    for text in (Text().block(tree), Text().flow(tree) + "\n"):
        data = cloud_config(text)
        assert still_yaml(data) == cloud_init_loads(data), data


CONSTRUCTED = [
    # dates SafeLoader cannot make, in keys and values, nested, under aliases; and ones it can
    "k: 2001-02-30\n", "2001-02-30: v\n", "{2001-02-30: x}\n", "k: [a, {b: [2001-02-30]}]\n",
    "a: &d 2001-02-30\nb: *d\n", "a: &m {k: [2001-02-30]}\nb: *m\n", "k: 2001-02-28\n2001-02-28: v\n",
    "k: 2002-12-14t21:59:43.10-05:00\n", "k: !!timestamp x\n", "k: '2001-02-30'\n", "k: !!str 2001-02-30\n",
    # other scalars construction refuses, and the tags it accepts
    "k: 0b_\n", "k: 0x_\n", "0b_: v\n", "k: !!bool x\n", "k: !!int x\n", "k: !!float x\n", "k: !!int 0x1F\n",
    "k: !!binary AAAA\n", "k: !!binary AA=A\n", "k: !!binary é\n", "!!binary AAAA: v\n", "k: !!null x\n",
    "k: !!str [a]\n", "k: !!null [a]\n", "k: !!map a\n", "k: !!seq {a: b}\n", "k: !!map [a]\n", "k: !foo x\n",
    "k: !foo [a]\n", "k: ! x\n", "k: !!merge x\n", "k: !!value x\n", "k: =\n", "=: v\n", "{&x =: 1, b: *x}\n",
    # !!set, !!omap, !!pairs and their shapes
    "k: !!set {a, b}\n", "k: !!set {a: 1}\n", "k: !!set {2001-02-30}\n", "k: !!set [a]\n", "k: !!omap [{a: 1}]\n",
    "k: !!omap [{a: 1, b: 2}]\n", "k: !!omap [a]\n", "k: !!pairs [{a: 1}, {a: 2}]\n", "k: !!pairs [a]\n",
    "k: !!omap [{a: 2001-02-30}]\n",
    # keys that are collections (unhashable), duplicate keys
    "? [a]\n: b\n", "{[a]: b}\n", "{{a: b}: c}\n", "? !!set {a}\n: b\n", "k: 1\nk: 2\n", "k: 1\nk: 2001-02-30\n",
    # merge keys
    "a: &x {b: 1}\nc: {<<: *x, d: 2}\n", "a: &x {b: 1}\nc: {<<: [*x, {e: 3}]}\n", "c: {<<: 1}\n", "c: {<<: [1]}\n",
    "c: {<<: {a: 2001-02-30}}\n", "c: {<<: [{a: 2001-02-30}]}\n", "c: {<<: !foo {a: 1}}\n",
    "{<<: {a: 1}, <<: {a: 2001-02-30}}\n", "a: &x {<<: *x}\n", "c: {<<: {<<: {a: 1}}}\n",
    # anchors, aliases, cycles
    "&a [*a]\n", "&a {k: *a}\n", "&a {*a: 1}\n", "a: &x [*x, 2001-02-30]\n", "a: &x [b, *x]\nc: *x\n",
    "a: *x\n", "a: &x [a]\nb: &x [c]\nd: *x\n",
    # the root a scalar, a collection, nothing
    "x\n", "2001-02-30\n", "!!binary é\n", "[]\n", "{}\n", "", "--- !!set\n",
]


@pytest.mark.parametrize("text", CONSTRUCTED)
def test_what_construction_decides_is_judged_as_cloud_init_loads_it(text: str) -> None:
    data = cloud_config(text)
    assert still_yaml(data) == cloud_init_loads(data), data


def test_nesting_too_deep_for_safeloader_is_refused() -> None:
    """SafeLoader's composer recurses: ~450 levels of flow collections raise RecursionError
    (cloud-init drops the user-data) where libyaml loads them."""
    for depth in (10, 99, 100, 101, 300, 600):
        for text in ("k: " + "[" * depth + "]" * depth, "k: " + "{a: " * depth + "b" + "}" * depth,
                     "a: &x " + "[" * depth + "]" * depth + "\nb: [[[[*x]]]]\n"):
            data = cloud_config(text)
            assert still_yaml(data) == cloud_init_loads(data), (depth, text[:20])
    assert not still_yaml(cloud_config("k: " + "[" * 600 + "]" * 600))
    # 600 levels in the text, anchors every 90 and an alias to each after it: walked in any
    # other than document order, every collection could first be met within 100 levels.
    chain = "".join(f"&x{i} " + "[" * 90 for i in range(6)) + "]" * 540
    data = cloud_config(f"k: {chain}\n" + "".join(f"a{i}: *x{i}\n" for i in range(6)))
    assert not cloud_init_loads(data)
    assert not still_yaml(data)


# Realistic cloud-config, `@` where a secret's value is put.
TEMPLATES = [
    TEMPLATE.replace("{{ hostname }}", "node-1").replace("{{ secrets.root_hash }}", "@"),
    TEMPLATE.replace("{{ hostname }}", "node-1").replace('"{{ secrets.root_hash }}"', "@"),
    TEMPLATE.replace("{{ hostname }}", "node-1").replace('"{{ secrets.root_hash }}"', "'@'"),
    "#cloud-config\nusers:\n  - name: ops\n    passwd: @\n    lock_passwd: false\n"
    "    ssh_authorized_keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx8 ops@lab.example]\n",
    "#cloud-config\nchpasswd: {expire: false, users: [{name: ops, password: @, type: hash}]}\n",
    "#cloud-config\nwrite_files:\n  - path: /etc/app/token\n    permissions: '0600'\n    content: |\n      @\n"
    "runcmd:\n  - [sh, -c, 'curl -fsS https://10.0.0.2/ready?node=n1']\n",
    "#cloud-config\nwrite_files:\n  - path: /etc/app.env\n    content: >-\n      TOKEN=@\n"
    "bootcmd:\n  - echo \"@\" > /dev/null  # a comment\n",
    "#cloud-config\napt:\n  sources:\n    internal:\n      source: \"deb https://u:@@repo.lab/ubuntu jammy main\"\n"
    "ntp: {servers: [10.0.0.1]}\n",
    "#cloud-config\nmerge_how: [{name: list, settings: [append]}]\nrandom_seed: {data: @, encoding: raw}\n",
]
VALUES = [
    "$6$rounds=4096$s3cr3tSalt$HASHVALUE", "plain", "", " ", "pa ss", 'pa"ss', "pa'ss", "it's", "a: b", "a:b",
    "x #y", "x#y", "#x", "- x", "? x", "x?", "{x}", "[x", "x]", "x,y", "&a", "*a", "!x", "!!binary x", "%x", "@x",
    "`x", "|", ">", "|#", "line1\nline2", "line1\n  k: v", "tab\there", "\tx", "x\t", "back\\slash", "\\x4G",
    "é😀", "\u2028", "\x85", "\x00", "\x1b[0m", "\ufeff", "2001-02-30", "2001-02-28", "12:30", "0x1G", "1e9999",
    "null", "yes", "~", "---", "...", "<<: *a", "\"", "''", "\\", "x\r\ny", "x\n\ufeff",
]


@pytest.mark.parametrize("template", TEMPLATES, ids=[f"template{i}" for i in range(len(TEMPLATES))])
def test_realistic_cloud_config_with_each_value_is_judged_as_cloud_init_loads_it(template: str) -> None:
    assert cloud_init_loads(template.replace("@", "pw").encode())
    for value, other in itertools.product(VALUES, ["ok", *VALUES[:8]]):
        data = template.replace("@", value, 1).replace("@", other).encode()
        assert still_yaml(data) == cloud_init_loads(data), data


def test_without_libyaml_the_answers_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "_FAST", None)
    for value in VALUES:
        data = TEMPLATES[1].replace("@", value).encode()
        assert still_yaml(data) == cloud_init_loads(data), data


def test_what_libyaml_alone_would_pass_is_refused() -> None:
    """Texts libyaml loads and cloud-init's SafeLoader refuses: each is a secret-breaks-user-data."""
    for data in (b"#cloud-config\npassword: secret\t\n", b"#cloud-config\nk: {password: pass?word}\n",
                 b"#cloud-config\nk: |#\n  x\n", b"#cloud-config\nk: v\n\xef\xbb\xbf"):
        assert yaml.load(data, Loader=yaml.CSafeLoader) is not None
        assert not still_yaml(data)


def test_a_value_that_makes_an_impossible_date_is_a_finding() -> None:
    """`password: 2001-02-30` is a YAML timestamp that PyYAML cannot make a date of (ValueError,
    not a YAMLError): cloud-init drops such user-data. It is a secret-breaks-user-data finding,
    where the renderer used to fail with the ValueError itself."""
    template = TEMPLATE.replace('"{{ secrets.root_hash }}"', "{{ secrets.root_hash }}")
    state = validate(snapshot({"root_hash": "2001-02-30"}, template=template)).state
    assert state is not None
    with pytest.raises(InvalidRevision) as raised:
        render_served(state, None, identity())
    assert {f.code for f in raised.value.findings} == {"secret-breaks-user-data"}
    fine = validate(snapshot({"root_hash": "2001-02-28"}, template=template)).state
    assert fine is not None
    render_served(fine, None, identity())
