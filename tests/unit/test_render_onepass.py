"""One render for a node's two passes (core.render.onepass) gives what rendering each pass gives:
random templates made of whole-output uses of the revision variables and secrets, and of uses
that must fall back (filters, tests, slices, blocks, the mapping itself, unknown names), with
values holding Jinja syntax, quotes, newlines and text over the size bound."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address
from pathlib import Path

from hypothesis import event, given, settings
from hypothesis import strategies as st

from reconciler.core import sandbox, template
from reconciler.core.model import Location, Node, Site
from reconciler.core.render import onepass

_FRAGMENTS = [
    "{{ revision }}", "{{ cloud_init_url }}", "{{ report_token }}", "{{ secrets.pw }}", "{{ secrets['pw'] }}",
    "x: \"{{ secrets.other }}\"\n", "{{ hostname }}", "text\n", "{{ metadata.note }}",
    "{% for k in [1, 2] %}{{ revision }}-{{ secrets.pw }}{% endfor %}",
    "{% if hostname %}{{ report_token }}{% endif %}",
    # each of these uses them otherwise: rendered pass by pass
    "{{ secrets.pw | tojson }}", "{{ revision[:7] }}", "{% if revision %}r{% endif %}", "{{ revision ~ 'x' }}",
    "{% block b %}{{ revision }}{% endblock %}{{ self.b() | upper }}", "{% set r = revision %}{{ r }}",
    "{% filter upper %}{{ secrets.pw }}{% endfilter %}", "{{ secrets }}", "{{ secrets.missing }}",
    "{{ secrets.get('pw') }}", "{% set secrets = {} %}", "{{ secrets[hostname] }}", "{{ 'y' * 600000 }}",
    "{{ secrets.pw.upper() }}", "{% for revision in [1] %}{{ revision }}{% endfor %}",
]
_VALUES = st.sampled_from(["$6$salt$hash", "{{ revision }}", "a\"b'c", "line\nnext", "ünï", "", "z" * 600_000])
_SITE = Site(server_address=IPv4Address("10.0.0.2"))
_NODE = Node(name="n1", mac="52:54:00:00:00:01", profile="p", hostname="n1", metadata={"note": "hi"},
             source=Location("nodes/n1.yaml"))


def _render(text: str, revision: str, token: str, secrets: dict[str, str]) -> str | None:
    try:
        return template.render(text, template.node_context(_SITE, _NODE, revision, token, secrets))
    except template.TemplateFailure:
        return None


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.sampled_from(_FRAGMENTS), min_size=1, max_size=4), pw=_VALUES, other=_VALUES,
       fingerprint=_VALUES, token=st.sampled_from(["", "0123456789abcdef0123456789abcdef"]))
def test_one_render_gives_each_pass_or_none(parts: list[str], pw: str, other: str, fingerprint: str,
                                            token: str) -> None:
    text = "#cloud-config\n" + "".join(parts)
    first = ("ab" * 20, token, {"pw": pw, "other": other})
    second = ("", "fedcba9876543210fedcba9876543210" if token else "", {"pw": fingerprint, "other": fingerprint})
    context = template.node_context(_SITE, _NODE, first[0], first[1], first[2])
    both = onepass.render_both(text, context, _SITE, _NODE, first, second)
    expected = (_render(text, *first), _render(text, *second))
    if both is not None:
        assert both == expected
        event("rendered once")
    else:
        # None only where a use is not a whole output, a render fails, or a text is over the bound
        whole = onepass.written(text) is not None
        assert not whole or None in expected or any(len(t or "") > sandbox.MAX_VALUE - 600_000 for t in expected)


def test_the_example_repositorys_user_data_is_rendered_once() -> None:
    text = (Path(__file__).parents[2] / "example-repo/cloud-init/ubuntu-autoinstall.yaml").read_text()
    assert onepass.written(text) == ("root_password_hash",)
    secrets = {"root_password_hash": "$6$x$y"}
    node = dataclasses.replace(_NODE, metadata={"ssh_authorized_keys": ["ssh-ed25519 AAAA ops"]})
    context = template.node_context(_SITE, node, "ab" * 20, "", secrets)
    both = onepass.render_both(text, context, _SITE, node, ("ab" * 20, "", secrets),
                               ("", "", {"root_password_hash": "fp"}))
    assert both is not None and "ab" * 20 in both[0] and "$6$x$y" in both[0] and "fp" in both[1]
