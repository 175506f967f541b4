"""Templates of kernel arguments and cloud-init user-data: Jinja2, sandboxed, strict.

Called by `core.validate` (every template rendered for every node, so an unknown variable is a
finding before anything is served) and by the renderer. An unknown variable is an error, never
an empty string; templates cannot reach Python internals (sandbox).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from reconciler.core.codes import issue
from reconciler.core.errors import InvalidRevision
from reconciler.core.model import Group, Location, Node, Site

_ENV = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)

# The variables a template may use, in the order the README documents them.
VARIABLES = (
    "name",
    "hostname",
    "mac",
    "mac_hyphen",
    "ip",
    "labels",
    "metadata",
    "profile",
    "revision",
    "server_url",
    "cloud_init_url",
    "report_url",
    "report_token",
)


# What only a node has: a repo group's profile (for machines no node file declares) has none of it.
NODE_ONLY_VARIABLES = frozenset(
    {"name", "hostname", "mac", "mac_hyphen", "ip", "cloud_init_url", "report_url", "report_token"}
)


class TemplateFailure(InvalidRevision):
    """A template that cannot be compiled or rendered. `line` is 1-based within the template.

    An InvalidRevision: raised by the renderer, it makes the commit invalid as its finding."""

    def __init__(self, message: str, line: int = 0, file: str = "") -> None:
        finding = issue("template-error", Location(file or "(render)"), f"rendering failed: {message}")
        super().__init__(message, (finding,))
        self.message = message
        self.line = line
        self.file = file  # where known: the repository file the failure is reported against


@dataclass(frozen=True)
class Compiled:
    """A compiled template, or its compile error."""

    template: jinja2.Template | None
    error: TemplateFailure | None


@functools.lru_cache(maxsize=4096)
def compile_template(text: str) -> Compiled:
    try:
        return Compiled(_ENV.from_string(text), None)
    except jinja2.TemplateSyntaxError as exc:
        return Compiled(None, TemplateFailure(f"template syntax: {exc.message}", exc.lineno or 0))


@functools.lru_cache(maxsize=4096)
def referenced_variables(text: str) -> frozenset[str]:
    """The top-level variable names a template uses (empty when it does not compile)."""
    if not is_template(text):
        return frozenset()
    try:
        return frozenset(jinja2.meta.find_undeclared_variables(_ENV.parse(text)))
    except jinja2.TemplateSyntaxError:
        return frozenset()


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


def render(text: str, context: Mapping[str, Any]) -> str:
    """Render `text` with `context`; TemplateFailure on syntax errors or unknown variables."""
    if not is_template(text):
        return text
    compiled = compile_template(text)
    if compiled.error is not None:
        raise compiled.error
    assert compiled.template is not None
    try:
        return compiled.template.render(context)
    except jinja2.UndefinedError as exc:
        raise TemplateFailure(f"undefined variable: {exc.message}", _template_line(exc)) from None
    except jinja2.TemplateError as exc:
        raise TemplateFailure(f"template error: {exc}", _template_line(exc)) from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateFailure(f"template error: {exc}", _template_line(exc)) from None


_SEPARATOR = "\x1f"  # schemas refuse control characters in args, so it cannot occur in one


def render_many(texts: tuple[str, ...], context: Mapping[str, Any]) -> tuple[str, ...]:
    """Render several short templates (a profile's args) with one Jinja render.

    TemplateFailure when any of them fails; callers render them one by one to place the error.
    """
    if not any(is_template(t) for t in texts):
        return texts
    joined = render(_SEPARATOR.join(texts), context)
    parts = tuple(joined.split(_SEPARATOR))
    if len(parts) != len(texts):  # a template produced the separator itself
        return tuple(render(t, context) for t in texts)
    return parts


def _template_line(exc: BaseException) -> int:
    tb = exc.__traceback__
    line = 0
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def cloud_init_url(site: Site, revision: str, mac: str) -> str:
    """The NoCloud seed URL of a node at a revision. It ends in `/`: cloud-init appends file names."""
    return f"{site.server_url}/r/{revision}/cloud-init/{mac}/"


def report_url(site: Site, mac: str) -> str:
    return f"{site.server_url}/report/{mac}"


def report_token(secret: bytes | None, node: str, revision: str) -> str:
    """The node's token for boot reports at `revision`: HMAC-SHA256(secret, node NUL revision), 32 hex.

    Rendered into the node's own cloud-init (`{{ report_token }}`, the autoinstall webhook URL),
    checked by `/report/...` (servers.http_results). Empty without a secret (`render` command)."""
    if not secret:
        return ""
    return hmac.new(secret, f"{node}\0{revision}".encode(), hashlib.sha256).hexdigest()[:32]


def node_context(site: Site, node: Node, revision: str, report_token: str = "") -> dict[str, Any]:
    """The variables templates see for `node` at `revision`."""
    return {
        "name": node.name,
        "hostname": node.hostname,
        "mac": node.mac,
        "mac_hyphen": node.mac.replace(":", "-"),
        "ip": str(node.ip) if node.ip is not None else "",
        "labels": dict(node.labels),
        "metadata": dict(node.metadata),
        "profile": node.profile,
        "revision": revision,
        "server_url": site.server_url,
        "cloud_init_url": cloud_init_url(site, revision, node.mac),
        "report_url": report_url(site, node.mac),
        "report_token": report_token,
    }


def group_context(site: Site, group: Group, revision: str) -> dict[str, Any]:
    """The variables a repo group's profile sees: no per-machine values (see NODE_ONLY_VARIABLES)."""
    return {
        "labels": dict(group.selector),
        "metadata": dict(group.metadata),
        "profile": group.profile,
        "revision": revision,
        "server_url": site.server_url,
    }
