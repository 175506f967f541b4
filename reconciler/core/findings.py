"""Findings as people and machines read them: text, JSON and GitHub workflow annotations.

Called by the `validate`, `render` and `diff` commands and by the daemon's status.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from reconciler.core.model import Issue, Severity


def as_dict(issue: Issue) -> dict[str, Any]:
    return {
        "file": issue.file,
        "line": issue.line,
        "column": issue.column,
        "severity": str(issue.severity),
        "code": issue.code,
        "message": issue.message,
    }


def format_text(issues: Iterable[Issue]) -> str:
    """`file:line:col: severity code: message`, one a line (as compilers and linters print)."""
    return "".join(f"{i.file}:{i.line}:{i.column}: {i.severity} {i.code}: {i.message}\n" for i in issues)


def format_json(issues: Sequence[Issue], valid: bool) -> str:
    errors = sum(1 for i in issues if i.is_error)
    doc = {"valid": valid, "errors": errors, "warnings": len(issues) - errors, "issues": [as_dict(i) for i in issues]}
    return json.dumps(doc, indent=2) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def format_github(issues: Iterable[Issue], prefix: str = "") -> str:
    """GitHub Actions workflow commands: each finding becomes an inline annotation in a PR.

    `prefix`: where the validated directory lies in the checkout ("site/" for `validate site`):
    GitHub places an annotation by its path from the workspace root."""
    lines = []
    for i in issues:
        level = "error" if i.severity is Severity.ERROR else "warning"
        props = [f"file={_escape_property(prefix + i.file)}"]
        if i.line:
            props.append(f"line={i.line}")
        if i.column:
            props.append(f"col={i.column}")
        props.append(f"title={_escape_property(i.code)}")
        lines.append(f"::{level} {','.join(props)}::{_escape_data(i.message)}\n")
    return "".join(lines)


def summary(issues: Sequence[Issue]) -> str:
    errors = sum(1 for i in issues if i.is_error)
    warnings = len(issues) - errors
    return f"{errors} error(s), {warnings} warning(s)"
