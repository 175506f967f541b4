"""build.stem (a node's name, a profile's id: its file name without the extension) gives what
posixpath.splitext(posixpath.basename(path))[0] gives, for any path: it no longer calls them."""

import posixpath

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.build import stem


@given(st.text(alphabet="ab./", max_size=12))
def test_stem_is_splitext_of_basename(path: str) -> None:
    assert stem(path) == posixpath.splitext(posixpath.basename(path))[0]


def test_stem_of_dotted_names() -> None:
    assert [stem(p) for p in ("nodes/n1.yaml", "nodes/.yaml", "nodes/..a.yml", "profiles/a.b.json", "x/a.")] == \
        ["n1", ".yaml", "..a", "a.b", "a"]
