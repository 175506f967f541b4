"""A user-data text is linted once per validation for each `autoinstall` flag it is served under.

The lint differs with the flag (an autoinstall profile's user-data must hold `autoinstall:`, a
misspelt key is an error there), so a text first linted for a plain profile was once taken as
linted for an autoinstall one too: the error depended on which node came first, and the memo's
replay of a node that only compared its text with a clean one (without linting it) hid it on the
next commit. Also: a first clean text that yields no clean shape (a line break YAML keeps,
U+2028) stays the reference in a forked check as in one process.
"""

from __future__ import annotations

import dataclasses
import functools
import json

from hypothesis import example, given, settings
from hypothesis import strategies as st

from reconciler.adapters import renderfork
from reconciler.core.docmemo import ValidateMemo
from reconciler.core.render import fanout
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import Validation, validate
from tests.unit.test_validatefork import BOOT, SITE, _example

FORKING = functools.partial(renderfork.walk, minimum=1)
PROFILES = {"install": ["autoinstall", "ip=dhcp"], "plain": ["ip=dhcp"]}
MISSPELT = "#cloud-config\nntp: {servers: [ntp-{{ labels.rack }}]}\nautoinstal: {version: 1}\n"
HOSTNAME = '#cloud-config\nhostname: "{{ metadata.h }}"\n'


def _snapshot(template: str, nodes: list[tuple[str, dict[str, object]]], revision: str = "ab" * 20) -> Snapshot:
    files = {p: b for p, b in _example().items() if not p.startswith(("nodes/", "profiles/"))}
    files["netboot.yaml"] = json.dumps(SITE).encode()
    files["cloud-init/shared.yaml"] = template.encode()
    for pid, args in PROFILES.items():
        files[f"profiles/{pid}.yaml"] = json.dumps({"boot": {**BOOT, "args": args}, "cloud_init": "shared"}).encode()
    for i, (pid, fields) in enumerate(nodes):
        node = {"mac": f"52:54:00:00:01:{i:02x}", "profile": pid, **fields}
        files[f"nodes/n{i:04d}.yaml"] = json.dumps(node).encode()
    return Snapshot(revision=revision, files=files)


def _codes(validation: Validation) -> list[tuple[str, str]]:
    return [(i.code, i.severity.name) for i in validation.issues if i.file.startswith("cloud-init")]


def test_a_text_linted_for_a_plain_profile_is_linted_again_for_an_autoinstall_one() -> None:
    """The same rendered text, first for a plain node: the autoinstall node's misspelt key is an
    error all the same (it was not reported: the installer would have found no autoinstall)."""
    snapshot = _snapshot(MISSPELT, [("plain", {"labels": {"rack": "r1"}}), ("install", {"labels": {"rack": "r1"}})])
    with fanout.using(fanout.one_by_one):
        validation = validate(snapshot)
    assert ("autoinstall-key-misspelt", "ERROR") in _codes(validation), validation.issues


def test_the_next_commit_with_the_memo_finds_the_error_a_fresh_validation_finds() -> None:
    """A plain node whose text was only compared with a clean one, then an autoinstall node with
    that text: the memo's replay took the text as linted, and the next commit lost the error."""
    nodes: list[tuple[str, dict[str, object]]] = [
        ("plain", {"labels": {"rack": "r1"}}), ("plain", {"labels": {"rack": "r2"}}),
        ("install", {"labels": {"rack": "r2"}})]
    first = _snapshot(MISSPELT, nodes)
    memo = ValidateMemo()
    with fanout.using(fanout.one_by_one):
        for snapshot in (first, dataclasses.replace(first, revision="cd" * 20)):
            assert validate(snapshot, memo=memo).issues == validate(snapshot).issues
            assert ("autoinstall-key-misspelt", "ERROR") in _codes(validate(snapshot, memo=memo))


@settings(max_examples=60, deadline=None)
@example([("plain", "b"), ("plain", "a"), ("install", "a")], MISSPELT)  # the memo's replay (above)
@example([("plain", "a\u2028b"), ("plain", "x1"), ("plain", "x2"), ("plain", "c"), ("plain", "d"), ("install", "d")],
         HOSTNAME)  # forked: this process's first clean text has no shape, the child's has
@given(st.lists(st.tuples(st.sampled_from(sorted(PROFILES)), st.sampled_from(["a", "b", "a\u2028b", "a\rb", "c\x85"])),
                min_size=2, max_size=14),
       st.sampled_from([MISSPELT, HOSTNAME]))
def test_forked_and_with_the_memo_over_two_commits_as_one_fresh_process(
        drawn: list[tuple[str, str]], template: str) -> None:
    nodes: list[tuple[str, dict[str, object]]] = [
        (pid, {"labels": {"rack": value.encode("unicode_escape").decode()}, "metadata": {"h": value}})
        for pid, value in drawn]
    first = _snapshot(template, nodes)
    memo = ValidateMemo()
    for snapshot in (first, dataclasses.replace(first, revision="cd" * 20)):
        with fanout.using(fanout.one_by_one):
            alone = validate(snapshot)
        with fanout.using(FORKING):
            forked = validate(snapshot, memo=None if snapshot is first else ValidateMemo())
            incremental = validate(snapshot, memo=memo)
        assert (forked.issues, forked.state) == (alone.issues, alone.state)
        assert (incremental.issues, incremental.state) == (alone.issues, alone.state)
