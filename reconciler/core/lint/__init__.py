"""Netboot lints: mistakes from the field that validate fine but leave a machine that never comes up.

Called by `core.bootcheck` on each profile's rendered kernel arguments (`kernel_args`) and each
node's rendered user-data (`user_data`). Each lint has a stable code, severity and why in
`core.codes` (marked `lint=True`); README "Lints" lists them.
"""

from __future__ import annotations

from reconciler.core.codes import lint_issue as finding
from reconciler.core.lint.kernel_args import asset_path, lint_args
from reconciler.core.lint.user_data import lint_user_data

__all__ = ["asset_path", "finding", "lint_args", "lint_user_data"]
