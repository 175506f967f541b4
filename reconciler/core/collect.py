"""The findings of one validation pass, each once, in the order found.

Called by `core.validate` and the stages it runs (`core.build`, `core.crossref`,
`core.bootcheck`). Every finding is made by `codes.issue`, so its severity is the table's.
"""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.core import codes
from reconciler.core.model import Issue, Location
from reconciler.core.template import TemplateFailure


class Findings:
    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self._seen: set[Issue] = set()
        self._template_failures: set[tuple[Location, str]] = set()

    def report(self, code: str, loc: Location, message: str) -> None:
        self.add(codes.issue(code, loc, message))

    def add(self, issue: Issue) -> None:
        if issue not in self._seen:
            self._seen.add(issue)
            self.issues.append(issue)

    def extend(self, issues: Iterable[Issue]) -> None:
        for issue in issues:
            self.add(issue)

    def template_failure(self, loc: Location, exc: TemplateFailure, subject: str) -> None:
        """One finding per template place and message, naming the first node or group that hit it."""
        if (loc, exc.message) in self._template_failures:
            return
        self._template_failures.add((loc, exc.message))
        code = "template-undefined" if exc.message.startswith("undefined") else "template-error"
        self.report(code, loc, f"{exc.message} (rendering for {subject})")
