"""Templates of kernel arguments and cloud-init user-data: Jinja2, sandboxed, strict.

Called by `core.validate` (every template rendered for every node, so an unknown variable is a
finding before anything is served) and by the renderer. An unknown variable is an error, never
an empty string; templates cannot reach Python internals (sandbox).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.meta

from reconciler.core import sandbox
from reconciler.core.codes import issue
from reconciler.core.errors import InvalidRevision
from reconciler.core.model import Group, Location, Node, Site

_ENV = sandbox.BoundedSandbox(
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
    "secrets",
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
    except Exception as exc:  # e.g. RecursionError on 10,000 nested brackets: the text is at fault
        return Compiled(None, TemplateFailure(f"template syntax: {_describe(exc)}"))


@functools.lru_cache(maxsize=4096)
def referenced_variables(text: str) -> frozenset[str]:
    """The top-level variable names a template uses (empty when it does not compile)."""
    if not is_template(text):
        return frozenset()
    try:
        return frozenset(jinja2.meta.find_undeclared_variables(_ENV.parse(text)))
    except Exception:  # it does not compile: compile_template reports why
        return frozenset()


@functools.lru_cache(maxsize=4096)
def secret_references(text: str) -> tuple[tuple[str | None, int], ...]:
    """Where a template uses `secrets`: (NAME, line) for `secrets.NAME` and `secrets['NAME']`,
    (None, line) for any other use (`secrets[x]`, the mapping itself). Empty when it does not
    compile (compile_template reports why) or does not name `secrets`."""
    if "secrets" not in text or not is_template(text):
        return ()
    try:
        tree = _ENV.parse(text)
    except Exception:
        return ()
    found: list[tuple[str | None, int]] = []
    named: set[int] = set()
    for node in tree.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        inner = getattr(node, "node", None)
        if not (isinstance(inner, jinja2.nodes.Name) and inner.name == "secrets"):
            continue
        named.add(id(inner))
        key = node.attr if isinstance(node, jinja2.nodes.Getattr) else getattr(node, "arg", None)
        if isinstance(key, jinja2.nodes.Const):
            key = key.value
        found.append((key if isinstance(key, str) else None, node.lineno))
    for name in tree.find_all(jinja2.nodes.Name):
        if name.name == "secrets" and name.ctx == "load" and id(name) not in named:
            found.append((None, name.lineno))
    return tuple(sorted(found, key=lambda f: (f[1], f[0] or "")))


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


MAX_GENERATION_BYTES = 512 * 1024 * 1024  # 12x what 10,000 nodes with real user-data render to


def generation_too_large(node: str) -> str:
    return (f"the rendered generation passes {MAX_GENERATION_BYTES // (1024 * 1024)} MiB at node {node!r}: "
            "that much user-data is a template gone wrong (each rendered file may be at most 1 MiB)")


RENDER_CPU_SECONDS = 2.0  # one template for one node: real ones take well under a millisecond
COMMIT_CPU_SECONDS = 60.0  # a whole commit, validation or rendering (10,000 nodes take ~3 s of CPU)
NODE_CPU_SECONDS = 0.005  # and this much more per node (or file): ~10x what a real node costs


@contextlib.contextmanager
def commit_budget(seconds: float | None = None, nodes: int = 0) -> Iterator[None]:
    """Bound the CPU time of all renders in this block (one commit's validation or rendering):
    `seconds`, or COMMIT_CPU_SECONDS and NODE_CPU_SECONDS for each of `nodes`. A bound that did
    not grow with the site would make every commit of a large enough one invalid (100,000 nodes
    took ~50 s of CPU to validate and render here: a slower machine would pass 60 s)."""
    if seconds is None:
        seconds = COMMIT_CPU_SECONDS + NODE_CPU_SECONDS * nodes
    token = _COMMIT_DEADLINE.set(time.thread_time() + seconds)
    try:
        yield
    finally:
        _COMMIT_DEADLINE.reset(token)


def commit_remaining() -> float | None:
    """The CPU seconds left of the enclosing `commit_budget` (None outside one): what a process
    forked to render part of the commit gets (`render.fanout`)."""
    deadline = _COMMIT_DEADLINE.get()
    return None if deadline is None else max(0.0, deadline - time.thread_time())


def charge(seconds: float) -> None:
    """Count `seconds` of CPU spent for this commit in another process (a forked child's part of
    the render or the boot check, `adapters.renderfork`) against the enclosing `commit_budget`:
    the commit may use its budget once, not once per CPU."""
    deadline = _COMMIT_DEADLINE.get()
    if deadline is not None and seconds > 0:
        _COMMIT_DEADLINE.set(deadline - seconds)  # `commit_budget`'s reset undoes it with its own


@contextlib.contextmanager
def outside_budget() -> Iterator[None]:
    """CPU spent in this block is not the commit's templates' and moves the enclosing
    `commit_budget`'s deadline by as much: the DHCP configs a forked render makes while it waits
    for its child (`adapters.renderfork`), which one process makes after the last template was
    checked against the budget (or a commit would pass in one process and fail forked)."""
    started = time.thread_time()
    try:
        yield
    finally:
        deadline = _COMMIT_DEADLINE.get()
        if deadline is not None:
            _COMMIT_DEADLINE.set(deadline + time.thread_time() - started)


_COMMIT_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("commit_deadline", default=None)


def render(text: str, context: Mapping[str, Any], lines: list[int] | None = None) -> str:
    """Render `text` with `context`, bounded in output size and CPU time (`core.sandbox`).
    `lines`: filled with the template line of each rendered line (`line_map`).

    Any failure, whatever raised it (an unknown variable, a bound, a recursion, a MemoryError),
    is a TemplateFailure with the template's line where one is known: a template that fails
    fails the same way every time, so it makes the commit invalid rather than an error to retry."""
    if not is_template(text):
        return text
    if lines is None:
        substituted = _substitute(text, context)
        if substituted is not None:
            return substituted
    compiled = compile_template(text)
    if compiled.error is not None:
        raise compiled.error
    assert compiled.template is not None
    limit = sandbox.cpu_time() + RENDER_CPU_SECONDS
    commit = _COMMIT_DEADLINE.get()
    token = sandbox.deadline.set(limit if commit is None else min(limit, commit))
    try:
        sandbox.check_deadline()
        return sandbox.render_bounded(compiled.template, context, lines=lines)
    except jinja2.UndefinedError as exc:
        raise TemplateFailure(f"undefined variable: {exc.message}", _template_line(exc)) from None
    except Exception as exc:  # every failure of a commit's template is the commit's
        raise TemplateFailure(f"template error: {_describe(exc)}", _template_line(exc)) from None
    finally:
        sandbox.deadline.reset(token)


# A template that is text and `{{ name }}`s of these (text values in every context) renders to its
# text with each value put in: Jinja does nothing else with it (no autoescape, no finalize), and
# `_substitutions` checks that against Jinja once per template. Most kernel arguments are such
# templates (`ds=nocloud;s={{ cloud_init_url }}`), rendered for every node.
_TEXT_VARIABLES = frozenset(VARIABLES) - {"labels", "metadata", "secrets"}
_SUBSTITUTION = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@functools.lru_cache(maxsize=4096)
def _substitutions(text: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(the texts, the names between them) when `text` is text and `{{ name }}`s only, else None."""
    parts = _SUBSTITUTION.split(text)
    texts, names = tuple(parts[0::2]), tuple(parts[1::2])
    if not names or any(name not in _TEXT_VARIABLES for name in names):
        return None
    for i, part in enumerate(texts):
        # no other Jinja syntax, no line break Jinja rewrites, and no '{' that Jinja would read
        # with the next '{{' as the start of an expression
        if "{{" in part or "{%" in part or "{#" in part or "\r" in part or (part.endswith("{") and i < len(names)):
            return None
    compiled = compile_template(text)
    if compiled.template is None:
        return None
    probes = {name: f"<{name}\x00{i}>" for i, name in enumerate(_TEXT_VARIABLES)}
    try:
        rendered = compiled.template.render(probes)
    except Exception:  # pragma: no cover - such a template renders
        return None
    if rendered != _join(texts, names, probes):
        return None
    return texts, names


def _join(texts: tuple[str, ...], names: tuple[str, ...], values: Mapping[str, Any]) -> str:
    out = [texts[0]]
    for name, part in zip(names, texts[1:], strict=True):
        out.append(values[name])
        out.append(part)
    return "".join(out)


def _substitute(text: str, context: Mapping[str, Any]) -> str | None:
    """`text` rendered without Jinja when it is a substitution-only template whose names all have
    text values here and the result is within the size bound; None: render it with Jinja (which
    also says why one of those does not hold). The commit's CPU budget is checked as Jinja's
    render would check it first."""
    found = _substitutions(text)
    if found is None:
        return None
    texts, names = found
    for name in names:
        if type(context.get(name)) is not str:
            return None
    commit = _COMMIT_DEADLINE.get()
    if commit is not None and sandbox.passed(commit):
        return None
    out = _join(texts, names, context)
    return out if len(out) <= sandbox.MAX_VALUE else None


def line_map(text: str, context: Mapping[str, Any]) -> Callable[[int], int]:
    """For a template that renders: the template line a rendered line (1-based) comes from, so a
    finding about the output points at what the user wrote. Renders it again, with tracking:
    only called when there is such a finding."""
    lines: list[int] = []
    out = render(text, context, lines).split("\n")
    source = text.split("\n")

    def line_of(rendered: int) -> int:
        if not 0 < rendered <= len(lines):
            return rendered
        guess = lines[rendered - 1]
        # Jinja places a literal by the statement before it (an `endfor`, say): a literal line
        # written as rendered, within a few lines of the guess, is where it was written.
        want = out[rendered - 1].rstrip() if rendered <= len(out) else ""
        near = sorted(range(max(guess - 3, 1), min(guess + 3, len(source)) + 1), key=lambda n: abs(n - guess))
        for same in (lambda src: src.rstrip() == want, lambda src: _same_start(src, want)):
            for line in near if want else ():
                if same(source[line - 1]):
                    return line
        return guess

    return line_of


def _same_start(source: str, rendered: str) -> bool:
    """Whether a template line with an expression (`b: {{ x }}`) starts as the rendered line does."""
    head = source.split("{{", 1)[0]
    return "{{" in source and bool(head.strip()) and rendered.startswith(head)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, RecursionError):
        return "nested or recursive too deep (a macro that calls itself?)"
    return str(exc) or type(exc).__name__


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


@functools.lru_cache(maxsize=1024)  # a render asks for a node's token at one revision up to three times
def report_token(secret: bytes | None, node: str, revision: str) -> str:
    """The node's token for boot reports at `revision`: HMAC-SHA256(secret, node NUL revision), 32 hex.

    Rendered into the node's own cloud-init (`{{ report_token }}`, the autoinstall webhook URL),
    checked by `/report/...` (servers.http_results). Empty without a secret (`render` command)."""
    if not secret:
        return ""
    return hmac.new(secret, f"{node}\0{revision}".encode(), hashlib.sha256).hexdigest()[:32]


def node_context(
    site: Site, node: Node, revision: str, report_token: str = "", secrets: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The variables templates see for `node` at `revision`. `secrets`: secrets.yaml's values by
    name, or placeholders for them (`core.secrets`)."""
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
        "secrets": dict(secrets or {}),
    }


def at_revision(
    context: Mapping[str, Any], site: Site, node: Node, revision: str, report_token: str, secrets: Mapping[str, str]
) -> dict[str, Any]:
    """`node_context(site, node, revision, report_token, secrets)` made from `context`, the
    node's at another revision: its other values are taken as they are (templates cannot
    change them: the sandbox is immutable)."""
    return {**context, "revision": revision, "cloud_init_url": cloud_init_url(site, revision, node.mac),
            "report_token": report_token, "secrets": dict(secrets)}


def group_context(site: Site, group: Group, revision: str) -> dict[str, Any]:
    """The variables a repo group's profile sees: no per-machine values (see NODE_ONLY_VARIABLES)."""
    return {
        "labels": dict(group.selector),
        "metadata": dict(group.metadata),
        "profile": group.profile,
        "revision": revision,
        "server_url": site.server_url,
    }
