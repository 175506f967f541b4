"""One Jinja render for both of a node's passes: its plan at the revision and the instance-id
pass (`render.nodes`: the revision "", the report token at "", the secrets' fingerprints).

Called by `render.nodes.plan_node` for the node's cloud-init template, the one template that is
rendered twice per node (it writes the revision or a secret: a first render of 100,000 nodes
spent a sixth of its CPU time on that second render).

How: a template that writes the revision variables (`revision`, `cloud_init_url`,
`report_token`) and the secrets it names (`secrets.NAME`, `secrets['NAME']`) only as whole
outputs (`{{ revision }}`, no filter, test or block that could see them; `written`) renders to
the same text for any values of those, with each value put where it was written. It is rendered
once with markers for them (random per process, so no committed text or node value holds one),
and each pass is that text with the markers replaced by the pass's values. The result is exact
as the stand-in revision of `render.reuse` is. Anything else (a template using them otherwise,
a render that fails, a text over the size bound) returns None: the caller renders each pass as
before, and fails as before.
"""

from __future__ import annotations

import functools
import re
import secrets as _random
from collections.abc import Mapping
from typing import Any

import jinja2
import jinja2.nodes

from reconciler.core import sandbox, template
from reconciler.core.model import Node, Site

_REVISION_VARIABLES = frozenset({"revision", "cloud_init_url", "report_token"})
_PARSER = jinja2.Environment(autoescape=False)  # noqa: S701 (parses only, never renders)
# Blocks whose output a template can take back and transform (as `render.reuse`'s).
_CAPTURING = (jinja2.nodes.FilterBlock, jinja2.nodes.AssignBlock, jinja2.nodes.CallBlock, jinja2.nodes.Macro,
              jinja2.nodes.EvalContextModifier, jinja2.nodes.Block)
_DIRECT = (jinja2.nodes.Name, jinja2.nodes.Getattr, jinja2.nodes.Getitem)

_MARK = "\x00" + _random.token_hex(16) + ":"
_MARKER = re.compile(re.escape(_MARK) + r"(\d+);")


def _marker(index: int) -> str:
    return f"{_MARK}{index};"


@functools.lru_cache(maxsize=4096)
def written(text: str) -> tuple[str, ...] | None:
    """The secrets `text` writes, in order, when it uses the revision variables and `secrets`
    only as whole outputs; None when it uses them otherwise (or does not parse)."""
    try:
        tree = _PARSER.parse(text)
    except jinja2.TemplateSyntaxError:
        return None
    names: list[str] = []
    if not _walk(tree, names, capturing=False, in_output=False):
        return None
    return tuple(dict.fromkeys(names))


def _secret_key(node: jinja2.nodes.Node) -> str | None:
    """NAME for `secrets.NAME` / `secrets['NAME']` (a NAME the sandbox looks up as a key), else None."""
    if isinstance(node, jinja2.nodes.Getattr):
        key: Any = node.attr
        if hasattr(dict, key):  # `secrets.items` is the dict's method, not a secret
            return None
    elif isinstance(node, jinja2.nodes.Getitem):
        key = node.arg.value if isinstance(node.arg, jinja2.nodes.Const) else None
    else:
        return None
    return key if isinstance(key, str) else None


def _walk(node: jinja2.nodes.Node, names: list[str], capturing: bool, in_output: bool) -> bool:
    if isinstance(node, jinja2.nodes.Name):
        if node.name in _REVISION_VARIABLES:
            return node.ctx == "load" and in_output and not capturing
        return node.name != "secrets"  # the mapping itself: anything may be done with it
    if isinstance(node, jinja2.nodes.Getattr | jinja2.nodes.Getitem):
        inner = node.node
        if isinstance(inner, jinja2.nodes.Name) and inner.name == "secrets":
            key = _secret_key(node)
            if key is None or inner.ctx != "load" or not in_output or capturing:
                return False
            names.append(key)
            return True
    capturing = capturing or isinstance(node, _CAPTURING) or (isinstance(node, jinja2.nodes.For) and node.recursive)
    if isinstance(node, jinja2.nodes.Output):
        return all(_walk(child, names, capturing, in_output=isinstance(child, _DIRECT)) for child in node.nodes)
    return all(_walk(child, names, capturing, in_output=False) for child in node.iter_child_nodes())


Pass = tuple[str, str, Mapping[str, str]]  # the revision, the report token, the secrets' values


def render_both(
    text: str, context: Mapping[str, Any], site: Site, node: Node, first: Pass, second: Pass
) -> tuple[str, str] | None:
    """`text` rendered with `context` (`template.node_context`) at `first` and at `second`, from
    one render; None when that cannot be exact (module docstring)."""
    names = written(text)
    if names is None:
        return None
    values = ([first[0], first[1]], [second[0], second[1]])
    for name in names:
        for out, (_, _, secrets) in zip(values, (first, second), strict=True):
            value = secrets.get(name)
            if type(value) is not str:
                return None  # not there (the render fails) or not text: rendered as before
            out.append(value)
    marked = template.at_revision(context, site, node, _marker(0), _marker(1),
                                  {name: _marker(i + 2) for i, name in enumerate(names)})
    try:
        once = template.render(text, marked)
    except template.TemplateFailure:
        return None
    first_text, second_text = _fill(once, values[0]), _fill(once, values[1])
    if len(first_text) > sandbox.MAX_VALUE or len(second_text) > sandbox.MAX_VALUE:
        return None
    return first_text, second_text


def _fill(text: str, values: list[str]) -> str:
    if _MARK not in text:
        return text
    return _MARKER.sub(lambda m: values[int(m.group(1))], text)
