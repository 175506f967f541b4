"""secrets.still_yaml answers as cloud-init's own load would (issue 25).

cloud-init loads user-data with `util.load_yaml`: the bytes decoded as UTF-8, then PyYAML's
`yaml.safe_load`, whose SafeLoader is pure Python; any error drops the user-data. still_yaml asks
libyaml first (~10x faster), so it must agree with that load on every text: where libyaml and
SafeLoader disagree, SafeLoader decides. Differential: generated YAML-ish texts (tabs, odd
indentation, quotes, colons, comments, unicode, duplicate keys, anchors, directives, control
characters) and realistic cloud-config with secret values put in every kind of place.
"""

from __future__ import annotations

import itertools

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
