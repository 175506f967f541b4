"""A Jinja sandbox whose templates cannot exhaust memory or CPU: results are bounded before they
are computed, loops and output are metered against a CPU deadline.

Used by `core.template` only. A commit's templates run inside the daemon: `{{ 'A' * 10**9 }}`
would take gigabytes and `{{ 9 ** 9999999 }}` seconds of CPU with the GIL held. Every operator
or call that can build a large value from a small template (`*`, `**`, `%`, `+`, `~`, str
methods and filters that pad, repeat, join or replace, `str.format` widths) is checked against
`MAX_VALUE` from its operands; every `for` loop and every output chunk checks the CPU deadline
(`deadline`, thread CPU time) set by the caller. Exceeding a bound raises `Bounded`, a Jinja
SecurityError, which `core.template` reports as a template error at its line.
"""

from __future__ import annotations

import contextvars
import functools
import json
import re
import string
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_VALUE = 1024 * 1024  # characters (or items) of one value or one rendered file: the input file bound
MAX_INT_BITS = 64 * 1024  # an integer of ~20,000 digits: far beyond any address, size or count
_TICK = 256  # loop iterations between deadline checks

# The thread-CPU-time deadline of the render running in this context (None: unbounded).
deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("template_deadline", default=None)


class Bounded(SecurityError):
    """A template went past a bound: a value too large, or its CPU time used up."""


# The last reading of this thread's CPU time: (monotonic clock, CPU time) then. A thread uses no
# more CPU time than the time that passes, so until a deadline could have passed since, the
# cheap clock answers for it. Reading the thread's CPU time is a system call (0.75 us against
# the monotonic clock's 0.19 us here); every output chunk checked it, a tenth of validating a node.
_reading: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar("cpu_reading", default=None)


def cpu_time() -> float:
    """This thread's CPU time now (time.thread_time), kept for `check_deadline`."""
    wall = time.perf_counter()  # read first: the CPU time read next was used by then at the latest
    used = time.thread_time()
    _reading.set((wall, used))
    return used


def check_deadline() -> None:
    limit = deadline.get()
    if limit is not None and passed(limit):
        raise Bounded("the template used up its CPU time (a loop that does not end soon enough?)")


def passed(limit: float) -> bool:
    """Whether this thread's CPU time is past `limit` (the cheap clock answers while it cannot be)."""
    reading = _reading.get()
    if reading is not None and reading[1] + (time.perf_counter() - reading[0]) <= limit:
        return False
    return cpu_time() > limit


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, str | bytes | list | tuple) else None


def _refuse_size(size: int, what: str) -> None:
    if size > MAX_VALUE:
        raise Bounded(f"{what} would be {size} long, over the {MAX_VALUE} limit")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _mul(left: Any, right: Any) -> Any:
    for seq, count in ((left, right), (right, left)):
        size, n = _size(seq), _int(count)
        if size is not None and n is not None:
            _refuse_size(size * max(n, 0), "a repeated value")
    a, b = _int(left), _int(right)
    if a is not None and b is not None and abs(a).bit_length() + abs(b).bit_length() > MAX_INT_BITS:
        raise Bounded(f"a product over {MAX_INT_BITS} bits")
    return left * right


def _pow(left: Any, right: Any) -> Any:
    base, exp = _int(left), _int(right)
    big = base is not None and exp is not None and exp > 0 and abs(base) > 1
    if big and abs(base).bit_length() * exp > MAX_INT_BITS:  # type: ignore[arg-type,operator]
        raise Bounded(f"a power over {MAX_INT_BITS} bits")
    return left**right


def _add(left: Any, right: Any) -> Any:
    a, b = _size(left), _size(right)
    if a is not None and b is not None:
        _refuse_size(a + b, "a joined value")
    return left + right


# printf-style conversions: flags, then width and precision (digits or `*`).
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(fmt: str, args: Any) -> None:
    for width, precision in _PRINTF.findall(fmt):
        for spec in (width, precision):
            if spec.isdigit():
                _refuse_size(int(spec), "a %-format width")
    for arg in args if isinstance(args, tuple) else (args,):
        n = _int(arg)
        if n is not None and "*" in fmt:
            _refuse_size(abs(n), "a %-format width")


def _mod(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        _check_printf(left, right)
    return left % right


def _check_format_spec(fmt: str) -> None:
    """A `str.format` string: no nested (computed) specs, no width or precision over the bound."""
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if not spec:
            continue
        if "{" in spec:
            raise Bounded("a computed format width ({:{w}}) is not allowed in templates")
        for number in re.findall(r"\d+", spec):
            _refuse_size(int(number), "a format width")


def _join(parts: Iterable[Any], sep: str = "") -> str:
    items = [str(p) for p in parts]
    _refuse_size(sum(map(len, items)) + len(sep) * max(len(items) - 1, 0), "a joined value")
    return sep.join(items)


def _replaced_size(text: str, old: str, new: str, count: int = -1) -> int:
    hits = (len(text) + 1) if old == "" else text.count(old)
    if count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


# str methods that can make a value much larger than their operands, and the size it would be.
_STR_METHOD_SIZE: dict[str, Callable[..., int]] = {
    "center": lambda s, width, *_: width,
    "ljust": lambda s, width, *_: width,
    "rjust": lambda s, width, *_: width,
    "zfill": lambda s, width, *_: width,
    "expandtabs": lambda s, tabsize=8: len(s) + s.count("\t") * max(tabsize, 0),
    "replace": lambda s, old, new, count=-1: _replaced_size(s, old, new, count),
}


def _json_size(value: Any, indent: Any) -> int:
    """An upper bound of `json.dumps(value, indent=indent)`'s length, from the compact form."""
    compact = json.dumps(value, default=str)
    step = len(indent) if isinstance(indent, str) else int(indent or 0)
    if step <= 0:
        return len(compact)
    depth = level = 0
    for ch in compact:
        level += ch in "[{"
        level -= ch in "]}"
        depth = max(depth, level)
    lines = compact.count(",") + compact.count("[") + compact.count("{") + 1
    return len(compact) + lines * (step * depth + 2)


def _guarded(original: Callable[..., Any], check: Callable[..., tuple[Any, ...] | None]) -> Callable[..., Any]:
    """`original` (a Jinja filter) with `check(passed, value, *args, **kwargs)` run first: it raises
    when the result would be too large, and may return the positional args to use instead.
    `passed` is what Jinja passes a `pass_context`/`pass_environment` filter first (else None)."""
    passes = getattr(original, "jinja_pass_arg", None) is not None

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        lead, rest = (args[:1], args[1:]) if passes else ((), args)
        replaced = check(lead[0] if lead else None, *rest, **kwargs)
        return original(*lead, *(rest if replaced is None else replaced), **kwargs)

    return functools.update_wrapper(wrapper, original)  # keeps `jinja_pass_arg`


def _center(_: Any, value: Any, width: int = 80, **__: Any) -> None:
    _refuse_size(int(width), "the |center result")


def _indent(_: Any, value: Any, width: Any = 4, *__: Any, **kwargs: Any) -> None:
    text = str(value)
    pad = len(width) if isinstance(width, str) else int(kwargs.get("width", width))
    _refuse_size(len(text) + pad * (text.count("\n") + 1), "the |indent result")


def _replace(_: Any, value: Any, old: Any, new: Any, count: int | None = None) -> None:
    _refuse_size(_replaced_size(str(value), str(old), str(new), -1 if count is None else count), "the |replace result")


def _format(_: Any, value: Any, *args: Any, **kwargs: Any) -> None:
    _check_printf(str(value), args or tuple(kwargs.values()))


def _join_filter(passed: Any, value: Iterable[Any], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    d = args[0] if args else kwargs.get("d", "")
    attribute = args[1] if len(args) > 1 else kwargs.get("attribute")
    items = list(value)  # an iterator is read once: the filter gets the list
    get = None if attribute is None else jinja2.filters.make_attrgetter(passed.environment, attribute)
    _join((x if get is None else get(x) for x in items), str(d))
    return (items, *args)


def _wordwrap(env: Any, value: Any, width: int = 79, *args: Any, **kwargs: Any) -> None:
    wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else None)
    text, sep = str(value), str(wrapstring if wrapstring is not None else env.newline_sequence)
    _refuse_size(len(text) + (len(text) // max(int(width), 1) + 1) * len(sep), "the |wordwrap result")


def _count(what: str) -> Callable[..., None]:
    def check(_: Any, value: Any, count: int, *__: Any, **___: Any) -> None:
        _refuse_size(int(count), what)

    return check


def _tojson(_: Any, value: Any, indent: Any = None) -> None:
    _refuse_size(_json_size(value, indent), "the |tojson result")


_FILTER_CHECKS: dict[str, Callable[..., tuple[Any, ...] | None]] = {
    "center": _center,
    "indent": _indent,
    "replace": _replace,
    "format": _format,
    "join": _join_filter,
    "wordwrap": _wordwrap,
    "batch": _count("a |batch size"),
    "slice": _count("a |slice count"),
    "tojson": _tojson,
}


@jinja2.pass_context
def _metered(context: Context, iterable: Any) -> Iterator[Any]:
    """Every `for` loop iterates through this: it checks the CPU deadline as it goes."""
    for i, item in enumerate(iterable):
        if i % _TICK == 0:
            check_deadline()
        yield item


def _concat(parts: tuple[Any, ...]) -> str:
    return _join(parts)


class _MeteredCodeGenerator(CodeGenerator):
    """`a ~ b` goes through the environment's bounded join instead of Jinja's own."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat_bounded((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


_BINOPS: dict[str, Callable[[Any, Any], Any]] = {"*": _mul, "**": _pow, "%": _mod, "+": _add}


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment with the bounds above (no autoescape: we render no HTML)."""

    code_generator_class = _MeteredCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        for name, check in _FILTER_CHECKS.items():
            self.filters[name] = _guarded(self.filters[name], check)
        self.filters["_metered"] = _metered
        self.globals.pop("lipsum", None)  # lorem ipsum of any length: nothing a netboot template needs
        self.concat_bounded = _concat

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "_metered", [], [], None, None, lineno=loop.iter.lineno)
        return tree

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        return _BINOPS[operator](left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format_spec(value.__self__)
        return wrapped

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            if name in _STR_METHOD_SIZE:
                try:
                    size = _STR_METHOD_SIZE[name](owner, *args, **kwargs)
                except TypeError:
                    size = 0  # wrong arguments: the call itself says so
                _refuse_size(size, f"the result of {name}()")
            elif name == "join" and args:
                items = list(args[0])
                _join(items, owner)
                args = (items, *args[1:])
        return super().call(__context, __obj, *args, **kwargs)


def _track(template: jinja2.Template, chunks: Generator[str, None, None], chunk: str, lines: list[int],
           at_line_start: bool) -> bool:
    """Record the template line each rendered line of `chunk` starts at: the template is paused
    at the line that yielded the chunk, and each newline of a literal chunk is one template line
    (an expression's own newlines are counted alike: close, not exact). Returns whether the next
    chunk starts a line."""
    inner = getattr(chunks, "gi_yieldfrom", None)
    frame = getattr(inner, "gi_frame", None)
    line = template.get_corresponding_lineno(frame.f_lineno) if frame is not None else (lines[-1] if lines else 1)
    if at_line_start:
        lines.append(line)
    count = 0
    for index, char in enumerate(chunk):
        if char == "\n":
            count += 1
            if index + 1 < len(chunk):
                lines.append(line + count)
    return chunk.endswith("\n")


def render_bounded(
    template: jinja2.Template, context: Any, limit: int = MAX_VALUE, lines: list[int] | None = None
) -> str:
    """Render with the output bounded to `limit` characters and the deadline checked per chunk.

    A bound passed is thrown into the template where it yielded the chunk, so the error
    carries that line. `lines`, when given, gets the template line each rendered line starts
    at (see `_track`)."""
    out: list[str] = []
    size = 0
    at_line_start = True
    chunks = cast(Generator[str, None, None], template.generate(context))
    # check_deadline's cheap answer, inlined for each chunk (a render yields one per output
    # expression and literal): a reading, older or not, plus the time since is at least the
    # thread's CPU time now; only when that could be past the deadline is the clock read.
    cutoff, reading = deadline.get(), _reading.get()
    clock = time.perf_counter
    for chunk in chunks:
        if lines is not None and chunk:
            at_line_start = _track(template, chunks, chunk, lines, at_line_start)
        size += len(chunk)
        try:
            if size > limit:
                raise Bounded(f"the rendered output is over the {limit} character limit")
            if cutoff is not None and (reading is None or reading[1] + (clock() - reading[0]) > cutoff):
                check_deadline()
                reading = _reading.get()
        except Bounded as exc:
            chunks.throw(exc)
            raise
        out.append(chunk)
    return "".join(out)
