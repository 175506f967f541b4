"""Go's value printing and the part of Go's text/template that matchbox templates use.

Called by `core.render.matchbox` (env files: matchbox prints values with `%v`) and by the
renderer and validation for matchbox's generic templates (`generic/<generic_id>`), which
matchbox renders with Go's text/template, `missingkey=error` (matchbox/http/render.go).

Supported actions: `{{.}}`, `{{.a.b}}` (map lookups), comments `{{/* ... */}}` and the trim
markers `{{-` / `-}}`. Fields under one top-level key may be deferred: rendered once, filled in
later (matchbox's `.request`, known only per request). Any other action (`if`, `range`, pipelines, functions) is a
TemplateFailure that says so: the template is checked at validation, never half-rendered.
Output is bounded like the sandbox's Jinja output (`sandbox.MAX_VALUE`, the input file bound),
rendered and filled alike: `{{.}}` a hundred thousand times over a group's metadata, or a deferred
field repeated and filled with a long query, would otherwise build gigabytes (a finding at
validation; a 404 for the request at /generic).
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from reconciler.core.sandbox import MAX_VALUE
from reconciler.core.template import TemplateFailure

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_FIELD = re.compile(r"\.|(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_COMMENT = re.compile(r"/\*.*\*/", re.DOTALL)


def go_float(value: float) -> str:
    """`fmt.Sprint(float64)`: strconv's shortest 'g' form, whose exponent form starts below 1e-4
    and at 1e6 (so a JSON `10000000` prints `1e+07`, Go templates' well-known surprise)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + exponent  # digits before the decimal point
    exp = point - 1
    prefix = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return prefix + digits + "0" * (point - len(digits))
    return f"{prefix}{digits[:point]}.{digits[point:]}"


def go_value(value: Any) -> str:
    """A JSON-decoded value as Go's `%v` prints it (numbers are float64, as `encoding/json` decodes them)."""
    if value is None:
        return "<nil>"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return go_float(float(value))
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{go_value(value[k])}" for k in sorted(value, key=str)) + "]"
    return str(value)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _too_long(line: int = 0) -> TemplateFailure:
    return TemplateFailure(f"Go template output would be over {MAX_VALUE} characters (the bound of one "
                           "rendered file, as of an input file)", line)


DEFER = "\x00"  # brackets a deferred field in a rendered template (templates hold no NUL: validation)
_DEFERRED = re.compile("\x00([^\x00]*)\x00")


def render(text: str, data: Mapping[str, Any], deferred: str | None = None) -> str:
    """`text` executed as a Go text/template over `data` with `missingkey=error`.

    `deferred`: a top-level key whose fields are not known yet (matchbox's per-request `request`):
    each is written as `DEFER<path>DEFER`, for `fill_deferred` to fill in later."""
    out: list[str] = []
    size = 0  # characters in `out`
    pos = 0
    for match in _ACTION.finditer(text):
        literal = text[pos : match.start()]
        if match.group(1):
            literal = literal.rstrip(" \t\r\n")
        out.append(literal)
        size += len(literal)
        pos = match.end()
        if match.group(3):
            rest = text[pos:]
            pos += len(rest) - len(rest.lstrip(" \t\r\n"))
        action = match.group(2).strip()
        line = _line_of(text, match.start())
        if _COMMENT.fullmatch(action):
            continue
        if not _FIELD.fullmatch(action):
            raise TemplateFailure(
                f"Go template action {{{{{action}}}}} is not supported (only fields such as {{{{.name}}}})", line
            )
        keys = action[1:].split(".") if action != "." else []
        if deferred is not None and keys and keys[0] == deferred:
            out.append(DEFER + ".".join(keys) + DEFER)
            size += len(out[-1])
            continue
        value: Any = data
        if action != ".":
            for key in keys:
                if not isinstance(value, Mapping):
                    raise TemplateFailure(f"Go template: can't evaluate field {key} in {action}", line)
                if key not in value:
                    raise TemplateFailure(f"Go template: map has no entry for key {key!r} ({action})", line)
                value = value[key]
        out.append("<no value>" if value is None else go_value(value))
        size += len(out[-1])
        if size > MAX_VALUE:
            raise _too_long(line)
    tail = text[pos:]
    if "{{" in tail:
        raise TemplateFailure("Go template: unclosed action", _line_of(text, pos + tail.index("{{")))
    out.append(tail)
    return "".join(out)


def has_deferred(text: str) -> bool:
    return DEFER in text


def fill_deferred(text: str, data: Mapping[str, Any]) -> str:
    """`text` (from `render(..., deferred=...)`) with its deferred fields looked up in `data`,
    `missingkey=error` as before: TemplateFailure naming the first missing key."""

    size = len(text)

    def one(match: re.Match[str]) -> str:
        nonlocal size
        value: Any = data
        for key in match.group(1).split("."):
            if not isinstance(value, Mapping) or key not in value:
                raise TemplateFailure(f"Go template: map has no entry for key {key!r} (.{match.group(1)})")
            value = value[key]
        filled = "<no value>" if value is None else go_value(value)
        size += len(filled) - len(match.group(0))
        if size > MAX_VALUE:
            raise _too_long()
        return filled

    return _DEFERRED.sub(one, text)
