"""Every finding code the source can emit is in the one table (`core.codes`), with its severity.

Read from the source itself (every call that makes a finding, with its code argument), so a
code added anywhere without a table entry fails here, not in front of a user.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from reconciler.core.codes import CODES, issue
from reconciler.core.model import Location, Severity

ROOT = Path(__file__).resolve().parents[2] / "reconciler"

# Callables that make a finding, and the position of their `code` argument.
CODE_ARG = {"issue": 0, "lint_issue": 0, "finding": 0, "report": 0, "_Refused": 0, "refused": 1, "at": 1, "Issue": 3,
            "local error": 2}


def _code_args() -> list[tuple[str, int, ast.expr, ast.expr | None]]:
    """(file, line, code expression, severity expression or None) of every finding constructor call."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name == "at" and not (isinstance(func, ast.Attribute) and ast.unparse(func.value) == "Issue"):
                continue
            if name == "error" and isinstance(func, ast.Name):
                name = "local error"  # a module's own helper: error(subject, field, code, message)
            if name not in CODE_ARG:
                continue
            pos = CODE_ARG[name]
            kw = {k.arg: k.value for k in node.keywords}
            code = node.args[pos] if len(node.args) > pos else kw.get("code")
            if code is None:
                continue  # Issue(**row): read back from a store, not made here
            severity = node.args[pos + 1] if name == "Issue" and len(node.args) > pos + 1 else kw.get("severity")
            found.append((str(path.relative_to(ROOT.parent)), node.lineno, code, severity))
    return found


def test_the_scan_sees_the_finding_constructors() -> None:
    calls = _code_args()
    assert len(calls) > 60  # the scan itself works: nearly every code is made at a call site
    files = {f for f, *_ in calls}
    assert {"reconciler/core/build.py", "reconciler/core/yamldoc.py", "reconciler/core/lint/user_data.py"} <= files


def test_every_code_emitted_anywhere_is_in_the_table() -> None:
    unknown, computed = [], []
    for file, line, code, severity in _code_args():
        if isinstance(code, ast.Constant):
            if code.value not in CODES:
                unknown.append(f"{file}:{line}: {code.value!r}")
            elif isinstance(severity, ast.Attribute) and severity.attr.lower() != str(CODES[code.value].severity):
                unknown.append(f"{file}:{line}: {code.value!r} made with another severity than the table's")
        elif not isinstance(code, ast.Name | ast.Attribute):
            computed.append(f"{file}:{line}: {ast.unparse(code)}")  # an f-string hides a code from the table
    assert unknown == []
    assert computed == []


def test_a_code_not_in_the_table_cannot_be_made() -> None:
    # Codes forwarded through a variable are checked when the finding is made.
    with pytest.raises(KeyError):
        issue("no-such-code", Location("x"), "m")


def test_the_table_gives_the_severity() -> None:
    assert issue("not-read", Location("x"), "m").severity is Severity.WARNING
    assert issue("schema", Location("x"), "m").severity is Severity.ERROR
    assert all(c.why and c.code == code for code, c in CODES.items())


def test_readme_lists_every_lint() -> None:
    readme = (ROOT.parent / "README.md").read_text()
    missing = [code for code, c in CODES.items() if c.lint and f"| `{code}` |" not in readme]
    assert missing == []
