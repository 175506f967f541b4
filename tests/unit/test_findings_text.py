"""What the first round left (issue 22 item 8): user-data findings at the template's own line,
duplicate user-data keys, and messages in words (no regular expressions, no NoneType, no raw
tab or NUL escapes from the YAML parser)."""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.core.model import Issue
from reconciler.core.validate import validate
from tests import repo_builder

LOOP = """\
#cloud-config
{%- for k in ['a', 'b', 'c', 'd', 'e', 'f'] %}
{{ k }}: 1
{%- endfor %}
autoinstall:
  version: 1
{}
"""


def issues(edits: Mapping[str, str | None]) -> list[Issue]:
    return list(validate(repo_builder.snapshot(edits)).issues)


def test_user_data_yaml_error_points_at_the_template_line() -> None:
    # The parser stops at `last:` (the flow list is never closed): rendered line 11, as the loop's
    # six keys move it down three lines; the finding is where it is written, template line 8.
    found = issues({"cloud-init/autoinstall.yaml": LOOP.replace("{}", "bad: [unclosed, {{ hostname }}\nlast: 1")})
    (hit,) = [i for i in found if i.code == "user-data-yaml"]
    assert (hit.file, hit.line) == ("cloud-init/autoinstall.yaml", 8), hit
    assert "rendered line 11" in hit.message


def test_duplicate_user_data_keys_are_an_error_at_the_second() -> None:
    edits = {"cloud-init/autoinstall.yaml": LOOP.replace("{}", "packages: [curl]\nruncmd: [x]\npackages: [git]")}
    found = issues(edits)
    dups = [(i.line, i.severity) for i in found if i.code == "user-data-duplicate-key"]
    assert dups == [(9, "error")]


def test_a_tab_in_user_data_is_named_in_words() -> None:
    found = issues({"cloud-init/autoinstall.yaml": LOOP.replace("{}", "late:\n\t- x")})
    (hit,) = [i for i in found if i.code == "user-data-yaml"]
    assert "a tab where YAML allows none (indent with spaces)" in hit.message and "\\t" not in hit.message
    assert hit.line == 8


def test_messages_show_no_parser_or_python_internals() -> None:
    found = issues({
        "nodes/node-1.yaml": "",
        "nodes/node-2.yaml": "mac: 52:54:00:aa:bb:02\nhostname: bad_host\nprofile: install\n",
        "nodes/node-3.yaml": "mac: 52:54:00:aa:bb:03\nprofile: install\nlabels: {rack: \"r\\0\"}\n",
        "profiles/local.yaml": "name: x\nboot:\n\tkernel: /assets/k\n",
    })
    text = "\n".join(f"{i.file}: {i.message}" for i in found)
    for internal in ("NoneType", "^[", "]{0,", "#x0000", "'\\t'", "<unicode string>"):
        assert internal not in text, text
    assert "nodes/node-1.yaml: (document): expected a mapping, found nothing" in text
    assert "'bad_host' is not valid here" in text
    assert "a tab where YAML allows none" in text
