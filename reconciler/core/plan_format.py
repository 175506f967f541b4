"""A `Plan` as people and machines read it: markdown for a pull-request comment, and JSON.

Called by the `diff` command. Markdown order: HEAD's findings first, then a summary table (one
row per node that changes), the blast radius of changed profiles, groups and templates, then
the details folded in `<details>`: per node, then the DHCP server configs, then other rendered
files. A repository with sites: a table of the blast radius by site, then each site's changes
(`markdown_sites`, `as_json_sites`). Pure: strings out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from reconciler.core import findings
from reconciler.core.model import Issue
from reconciler.core.plan import FileDiff, NodePlan, Plan, Side, SourceChange

MAX_DIFF_LINES = 200
MAX_FINDINGS = 50

VERDICT_TEXT = {
    "will-reinstall": "**WILL REINSTALL**",
    "first-install": "installs (new machine)",
    "next-netboot": "boots the new plan at its next netboot",
    "not-installed-only": "no (install-once: bump `reinstall` to apply)",
    "installed-keeps-disk": "no: installed, bump `reinstall` to apply",
    "local-disk": "no (local disk)",
    "no": "no",
}


VERDICT_SHORT = {
    "will-reinstall": "**WILL REINSTALL**",
    "first-install": "installs",
    "next-netboot": "yes, at its next netboot",
    "not-installed-only": "no",
    "installed-keeps-disk": "no (installed)",
    "local-disk": "no",
    "no": "no",
}


def short(revision: str) -> str:
    return revision[:12] if re.fullmatch(r"[0-9a-f]{40}", revision) else revision


def code(text: str) -> str:
    """`text` as an inline code span, whatever backticks it holds."""
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def cell(text: str) -> str:
    """Safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def fenced(body: str, lang: str = "") -> str:
    """A fenced code block, long enough not to be closed by the body, cut at MAX_DIFF_LINES."""
    lines = body.splitlines()
    if len(lines) > MAX_DIFF_LINES:
        more = len(lines) - MAX_DIFF_LINES
        lines = [*lines[:MAX_DIFF_LINES], f"... {more} more line(s) (run `netboot-reconcile diff` locally)"]
    runs = [len(r) for r in re.findall(r"^`{3,}", body, flags=re.M)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return f"{fence}{lang}\n" + "\n".join(lines) + f"\n{fence}\n"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# -- markdown ----------------------------------------------------------------------------------------


def markdown(plan: Plan) -> str:
    out: list[str] = [
        f"## netboot-reconcile diff {code(short(plan.base.revision))} → {code(short(plan.head.revision))}",
        "",
    ]
    out += _findings_section(plan.head, "HEAD")
    return "\n".join(out + _body(plan)).rstrip() + "\n"


def markdown_sites(plans: Mapping[str, Plan]) -> str:
    """A repository with sites: HEAD's findings once, the blast radius by site (one row per site),
    then each site that changes as `markdown` shows one plan."""
    first = next(iter(plans.values()))
    out: list[str] = [
        f"## netboot-reconcile diff {code(short(first.base.revision))} → {code(short(first.head.revision))}",
        "",
    ]
    out += _findings_section(first.head, "HEAD")
    out += ["### Blast radius by site", "",
            "| site | nodes change | added | removed | changed | will reinstall | DHCP configs change |",
            "|---|---|---|---|---|---|---|"]
    for name, plan in plans.items():
        added, removed, changed = (len(plan.by_status(s)) for s in ("added", "removed", "changed"))
        dhcp = ", ".join(code(d.path) for d in plan.dhcp) or "no"
        reinstall = ", ".join(code(n.name) for n in plan.reinstalls) or "none"
        out.append(f"| {code(name)} | {len(plan.nodes)} | {added} | {removed} | {changed} | {cell(reinstall)} | "
                   f"{cell(dhcp)} |")
    out.append("")
    for name, plan in plans.items():
        if plan.changed or plan.sources:
            out += [f"## Site {code(name)}", "", *_body(plan)]
    if not any(plan.changed for plan in plans.values()):
        out += ["**No change** at any site.", "", _footer(first)]
    return "\n".join(out).rstrip() + "\n"


def _body(plan: Plan) -> list[str]:
    """Everything of one plan below HEAD's findings."""
    out: list[str] = []
    if not plan.base.valid:
        out += [
            f"BASE {code(short(plan.base.revision))} is invalid ({findings.summary(plan.base.issues)}): it was never "
            "served, so HEAD is compared against an empty repository (every node is listed as new).",
            "",
        ]
        out += _fold("BASE findings", fenced(findings.format_text(plan.base.issues[:MAX_FINDINGS]).rstrip(), "text"))
    if not plan.head.valid:
        out += [
            "HEAD will not be served: the daemon keeps serving its last valid generation. No node changes shown.",
            "",
        ]
        return out
    if not plan.changed:
        out += ["**No change**: every machine boots, and every server answers, as before.", ""]
        out += _sources_section(plan.sources)
        out += [_footer(plan)]
        return out

    out += [_summary_line(plan), ""]
    if plan.nodes:
        out += ["| node | change | profile | what changes | reinstall |", "|---|---|---|---|---|"]
        for n in plan.nodes:
            what = ", ".join(n.what) or "—"
            out.append(
                f"| {code(n.name)} | {n.status} | {cell(code(n.profile))} | {cell(what)} | "
                f"{VERDICT_TEXT[n.reinstall.verdict]} |"
            )
        out.append("")
    out += _sources_section(plan.sources)
    if plan.nodes:
        out += ["### Nodes", ""]
        for n in plan.nodes:
            out += _fold(f"<b>{n.name}</b> ({n.status}): {', '.join(n.what) or 'rendered files'}", _node_body(n))
    if plan.dhcp:
        out += ["### DHCP server configs", ""]
        for d in plan.dhcp:
            out += _fold(_file_title(d), fenced(d.diff.rstrip(), "diff"))
    if plan.other_files:
        out += ["### Other rendered files", ""]
        for d in plan.other_files:
            out += _fold(_file_title(d), fenced(d.diff.rstrip(), "diff"))
    out.append(_footer(plan))
    return out


def _footer(plan: Plan) -> str:
    return (
        f"<sub>Both revisions rendered with the placeholder revision {code(plan.placeholder)}, so URLs pinned to a "
        "revision (`/r/<sha>/...`) show only real changes. Reinstall rule: an install-once node reinstalls when "
        "its `reinstall` counter changes; other changes reach an installed machine only through that counter."
        + (" Which machines installed: the daemon's results store (`--state-dir` or `--url`)."
           if plan.installs_known else "")
        + "</sub>"
    )


def _summary_line(plan: Plan) -> str:
    added, removed, changed = (len(plan.by_status(s)) for s in ("added", "removed", "changed"))
    parts = [f"**{_plural(len(plan.nodes), 'node')} change**: {added} added, {removed} removed, {changed} changed"]
    reinstalls = plan.reinstalls
    if reinstalls:
        parts.append(f"**{len(reinstalls)} WILL REINSTALL**: " + ", ".join(code(n.name) for n in reinstalls))
    if plan.dhcp:
        parts.append("DHCP configs change: " + ", ".join(code(d.path) for d in plan.dhcp))
    return " · ".join(parts)


def _findings_section(side: Side, label: str) -> list[str]:
    if not side.issues:
        return [f"{label} {code(short(side.revision))} is valid: no findings.", ""]
    state = "valid" if side.valid else "**invalid**"
    out = [f"{label} {code(short(side.revision))} is {state}: {findings.summary(side.issues)}.", ""]
    shown = side.issues[:MAX_FINDINGS]
    body = findings.format_text(shown).rstrip()
    if len(side.issues) > MAX_FINDINGS:
        body += f"\n... {len(side.issues) - MAX_FINDINGS} more finding(s)"
    out += [fenced(body, "text")]
    return out


def _sources_section(sources: Sequence[SourceChange]) -> list[str]:
    if not sources:
        return []
    out = [
        "### Blast radius",
        "",
        "| changed | reaches | nodes | boot or are served differently |",
        "|---|---|---|---|",
    ]
    for s in sources:
        nodes = ", ".join(s.reaches) or "—"
        what = f"{s.kind} {code(s.name)} ({s.status})"
        out.append(f"| {cell(what)} | {len(s.reaches)} | {cell(nodes)} | {len(s.changed_nodes)} |")
    notes = [f"- {s.kind} {code(s.name)}: {s.note}" for s in sources if s.note]
    return [*out, "", *notes, *([""] if notes else [])]


def _node_body(n: NodePlan) -> str:
    lines: list[str] = []
    for c in n.changes:
        if c.what == "metadata":
            lines.append("- **metadata** changes (see the rendered files below)")
        elif n.status == "added":
            lines.append(f"- **{c.what}**: {code(c.after)}")
        else:
            lines.append(f"- **{c.what}**: {code(c.before)} → {code(c.after)}")
    if n.args:
        lines.append("- **kernel args**:")
        lines += [f"  - removed {code(a)}" for a in n.args.removed]
        lines += [f"  - added {code(a)}" for a in n.args.added]
        lines += [f"  - changed {code(a)} → {code(b)}" for a, b in n.args.changed]
        if n.args.reordered:
            lines.append("  - same arguments, new order")
    lines.append(f"- **reinstall**: {VERDICT_SHORT[n.reinstall.verdict]}: {n.reinstall.reason}")
    if n.reached_by:
        lines.append("- reached by: " + ", ".join(n.reached_by))
    if n.files:
        lines.append("- rendered files that differ: " + ", ".join(code(f) for f in n.files))
    if n.user_data_diff:
        lines += ["", "**cloud-init user-data**", "", fenced(n.user_data_diff.rstrip(), "diff")]
    return "\n".join(lines) + "\n"


def _file_title(d: FileDiff) -> str:
    return f"<code>{d.path}</code> (+{d.added} −{d.removed})"


def _fold(summary: str, body: str) -> list[str]:
    return [f"<details><summary>{summary}</summary>", "", body.rstrip(), "", "</details>", ""]


# -- JSON ----------------------------------------------------------------------------------------------


def _issues(issues: Iterable[Issue]) -> list[dict[str, Any]]:
    return [findings.as_dict(i) for i in issues]


def _side(side: Side) -> dict[str, Any]:
    errors = sum(1 for i in side.issues if i.is_error)
    return {
        "revision": side.revision,
        "valid": side.valid,
        "errors": errors,
        "warnings": len(side.issues) - errors,
        "issues": _issues(side.issues),
    }


def _node(n: NodePlan) -> dict[str, Any]:
    return {
        "name": n.name,
        "status": n.status,
        "mac": n.mac,
        "profile": n.profile,
        "what": list(n.what),
        "changes": [{"what": c.what, "before": c.before, "after": c.after} for c in n.changes],
        "kernel_args": {
            "removed": list(n.args.removed),
            "added": list(n.args.added),
            "changed": [{"before": a, "after": b} for a, b in n.args.changed],
            "reordered": n.args.reordered,
        },
        "user_data_diff": n.user_data_diff,
        "reinstall": {"verdict": n.reinstall.verdict, "will_reinstall": n.reinstall.will_reinstall,
                      "reason": n.reinstall.reason},
        "reached_by": list(n.reached_by),
        "files": list(n.files),
    }  # fmt: skip


def _file(d: FileDiff) -> dict[str, Any]:
    return {"path": d.path, "added": d.added, "removed": d.removed, "diff": d.diff}


def as_json(plan: Plan) -> str:
    doc = {
        "base": _side(plan.base),
        "head": _side(plan.head),
        "changed": plan.changed,
        "placeholder_revision": plan.placeholder,
        "installs_known": plan.installs_known,
        **_changes(plan),
    }
    return json.dumps(doc, indent=2) + "\n"


def as_json_sites(plans: Mapping[str, Plan]) -> str:
    """A repository with sites: `as_json`'s document with the changes under `sites`, by site."""
    first = next(iter(plans.values()))
    doc = {
        "base": _side(first.base),
        "head": _side(first.head),
        "changed": any(p.changed for p in plans.values()),
        "placeholder_revision": first.placeholder,
        "installs_known": first.installs_known,
        "sites": {name: {"changed": plan.changed, **_changes(plan)} for name, plan in plans.items()},
    }
    return json.dumps(doc, indent=2) + "\n"


def _changes(plan: Plan) -> dict[str, Any]:
    return {
        "summary": {
            "added": [n.name for n in plan.by_status("added")],
            "removed": [n.name for n in plan.by_status("removed")],
            "changed": [n.name for n in plan.by_status("changed")],
            "will_reinstall": [n.name for n in plan.reinstalls],
        },
        "nodes": [_node(n) for n in plan.nodes],
        "blast_radius": [
            {
                "kind": s.kind,
                "name": s.name,
                "status": s.status,
                "reaches": list(s.reaches),
                "count": len(s.reaches),
                "changed_nodes": list(s.changed_nodes),
                "note": s.note,
            }
            for s in plan.sources
        ],
        "dhcp": [_file(d) for d in plan.dhcp],
        "other_files": [_file(d) for d in plan.other_files],
    }
