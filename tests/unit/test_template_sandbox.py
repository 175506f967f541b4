"""The bounded sandbox (core.sandbox), bomb by bomb: each is refused before it is computed, as a
TemplateFailure at its line; ordinary uses of the same operators and filters render as before.
(The CPU deadline and the whole path through `validate` and the daemon: test_template_bounds.)"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import sandbox, template

BOMBS = [
    "{{ 'A' * 1000000000 }}",
    "{{ [1] * 1000000000 }}",
    "{{ 9 ** 9999999 }}",
    "{% set ns = namespace(x='A') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
    "{% set ns = namespace(x='A') %}{% for i in range(60) %}{% set ns.x = ns.x + ns.x %}{% endfor %}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{{ 'x'|center(1000000000) }}",
    "{{ 'x'.center(1000000000) }}",
    "{{ 'x'.ljust(1000000000) }}",
    "{{ 'x'.zfill(1000000000) }}",
    "{{ 'a\tb'.expandtabs(1000000000) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '%0999999999d'|format(1) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ range(100000)|join('x' * 100000) }}",
    "{{ 'x'.join(range(100000)|map('string')|list) * 1 }}{{ ('y' * 100000).join(range(100000)|map('string')) }}",
    "{{ 'aaaa'|replace('', 'x' * 1000000) }}",
    "{{ ('a' * 1000)|replace('a', 'b' * 10000) }}",
    "{{ 'x'|indent(1000000000, true) }}",
    "{{ 'ab cd'|wordwrap(1, wrapstring='x' * 1000000) }}",
    "{{ [1]|batch(1000000000, 'x')|list|length }}",
    "{{ [1]|slice(1000000000, 'x')|list|length }}",
    "{{ range(100000)|list|tojson(indent=1000000) }}",
    "{% for i in range(2000) %}{{ 'x' * 1000 }}{% endfor %}",
    "{{ (" * 3000 + "1" + ")" * 3000 + " }}",
]


@pytest.mark.parametrize("bomb", BOMBS)
def test_a_bomb_is_a_template_failure(bomb: str) -> None:
    with pytest.raises(template.TemplateFailure) as caught:
        template.render("#cloud-config\n" + bomb, {})
    assert caught.value.line in (0, 2) and caught.value.message.startswith("template")


def test_lipsum_is_not_available() -> None:
    with pytest.raises(template.TemplateFailure, match="undefined variable"):
        template.render("{{ lipsum(100000) }}", {})


def test_ordinary_templates_render_as_before() -> None:
    text = (
        "{{ 'x' ~ 'y' }} {{ 3 * 4 }} {{ 2 ** 10 }} {{ '%s-%d' % ('a', 3) }} {{ [1, 2]|join(',') }} "
        "{{ 'ab'.replace('a', 'c') }} {{ '{:>4}'.format(1) }} {{ 'x'|center(5) }} {{ [1, 2, 3]|batch(2)|list }} "
        "{{ {'a': [1]}|tojson }} {{ 'a b c'|wordwrap(1, wrapstring='-') }} {{ [{'k': 1}, {'k': 2}]|join('+', "
        "attribute='k') }} {{ 'ab'|indent(2, true) }} {{ ['a'] * 3 }} {{ 'ab' + 'cd' }} "
        "{% for i in range(3) %}{{ loop.index }}{% endfor %}"
    )
    assert template.render(text, {}) == (
        "xy 12 1024 a-3 1,2 cb    1   x   [[1, 2], [3]] {\"a\": [1]} a-b-c 1+2   ab ['a', 'a', 'a'] abcd 123"
    )


def test_the_deadline_is_the_one_set_now_and_is_checked_once_passed() -> None:
    """check_deadline answers from the monotonic clock until the deadline could have passed
    (core.sandbox._reading): a deadline set later, or CPU time spent past it, is still refused."""
    far = sandbox.deadline.set(time.thread_time() + 60)
    try:
        sandbox.check_deadline()  # far off: the cheap clock answers the next checks
        passed = sandbox.deadline.set(time.thread_time() - 1)
        try:
            with pytest.raises(sandbox.Bounded):
                sandbox.check_deadline()
        finally:
            sandbox.deadline.reset(passed)
        soon = sandbox.deadline.set(time.thread_time() + 0.05)
        try:
            sandbox.check_deadline()
            end = time.thread_time() + 0.1
            while time.thread_time() < end:
                pass
            with pytest.raises(sandbox.Bounded):
                sandbox.check_deadline()
        finally:
            sandbox.deadline.reset(soon)
    finally:
        sandbox.deadline.reset(far)


SIMPLE = st.sampled_from(["{{ name }}", "{{mac}}", "{{\n ip\t}}", "{{ cloud_init_url }}", "{{ revision }}", "x=",
                          "/", " ", "\n", "}", "}}", "%}", "#}", "a{b"])
TRICKY = st.sampled_from(["{{ labels }}", "{{ true }}", "{{- name }}", "{{ name -}}", "{{ name|lower }}",
                          "{{ nosuch }}", "{", "{{", "{%", "{#", "\r\n", "{% raw %}a{% endraw %}"])
VALUES = st.one_of(st.text(max_size=12), st.sampled_from(["{{ name }}", "", "\r\n", "{%", 7]))


@settings(max_examples=400, deadline=None)
@given(st.lists(SIMPLE | SIMPLE | SIMPLE | TRICKY, min_size=1, max_size=8),
       st.fixed_dictionaries({name: VALUES for name in template.VARIABLES if name != "ip"}, optional={"ip": VALUES}))
def test_a_substitution_rendered_without_jinja_is_what_jinja_renders(pieces: list[str], values: dict[str, Any]) -> None:
    """template.render puts the values in itself for a template of text and `{{ name }}`s
    (core.template._substitute); rendering with line tracking always goes through Jinja."""
    text = "".join(pieces)
    outcomes = []
    tracked: list[int] = []
    for lines in (None, tracked):
        try:
            outcomes.append(("ok", template.render(text, values, lines)))
        except template.TemplateFailure as exc:
            outcomes.append(("failed", exc.message))
    assert outcomes[0] == outcomes[1]


def test_kernel_arguments_of_node_values_are_substituted() -> None:
    text = "ds=nocloud;s={{ cloud_init_url }};dsmode=net\x1furl={{server_url}}/x.iso"
    assert template._substitutions(text) is not None
    assert template.render(text, {"cloud_init_url": "http://h/c/", "server_url": "http://h"}) == \
        "ds=nocloud;s=http://h/c/;dsmode=net\x1furl=http://h/x.iso"
