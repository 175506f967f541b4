"""The `/ui/` dashboard as server-rendered HTML: commits down, nodes across, one coloured cell per outcome.

Called by `servers.http_results.DashboardApp`. No JavaScript at all and nothing fetched from
elsewhere: inline CSS, links for navigation (a cell links to the node's event timeline at that
commit), and a `<meta refresh>` so a wall screen keeps itself current. Every cell carries its
outcome as text and symbol, not colour only, and as `data-*` attributes (tests read the DOM).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

from reconciler.core.outcomes import CommitResult, NodeResult, Outcome

SYMBOL: Mapping[str, str] = {
    Outcome.PENDING: "·",
    Outcome.BOOTING: "↻",
    Outcome.INSTALLING: "⋯",
    Outcome.SUCCEEDED: "✓",
    Outcome.FAILED: "✗",
    Outcome.TIMED_OUT: "!",  # an hourglass glyph is missing from common fonts
    Outcome.LOCAL_DISK: "⌂",
}

CSS = """
:root { --ok:#1a7f37; --bad:#cf222e; --late:#9a6700; --run:#0969da; --disk:#57606a; --none:#eaeef2; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem; color: #1f2328; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; } h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
.muted { color: #57606a; } code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
table { border-collapse: collapse; }
th, td { border: 1px solid #d0d7de; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
table.grid td.cell { text-align: center; padding: 0; min-width: 2.6rem; }
table.grid td.cell a { display: block; padding: .35rem .4rem; color: #fff; text-decoration: none; font-weight: 700; }
table.grid th.node { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; }
.o-succeeded { background: var(--ok); } .o-failed { background: var(--bad); } .o-timed-out { background: var(--late); }
.o-booting, .o-installing { background: var(--run); } .o-local-disk { background: var(--disk); }
.o-pending { background: var(--none); } td.o-pending a, .badge.o-pending { color: #57606a !important; }
td.na { background: repeating-linear-gradient(45deg, #fff, #fff 4px, #f6f8fa 4px, #f6f8fa 8px); }
.legend span { display: inline-block; margin-right: .8rem; }
.legend b { display: inline-block; width: 1.4rem; text-align: center; color: #fff; border-radius: 3px; }
.counts span { margin-right: .6rem; white-space: nowrap; }
tr.current th.commit { border-left: 4px solid var(--run); }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 1rem; color: #fff; font-size: .85rem; }
pre { margin: 0; white-space: pre-wrap; word-break: break-all; max-width: 60rem; font-size: 12px; }
a { color: #0969da; }
"""


def _page(title: str, body: str, refresh: bool = False) -> bytes:
    meta = '<meta http-equiv="refresh" content="30">' if refresh else ""
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width\">{meta}<title>{escape(title)}</title>"
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    ).encode()


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _legend() -> str:
    items = "".join(
        f'<span><b class="o-{o}">{SYMBOL[o]}</b> {escape(str(o))}</span>' for o in Outcome
    )
    return f'<p class="legend">{items}</p>'


def _counts(c: CommitResult) -> str:
    keys = ("succeeded", "failed", "timed_out", "in_progress", "local_disk", "pending")
    parts = [f'<span>{c.targeted} targeted</span>', f'<span>{c.counts.get("booted", 0)} booted</span>']
    parts += [f'<span>{c.counts[k]} {k.replace("_", " ")}</span>' for k in keys if c.counts.get(k)]
    return '<div class="counts muted">' + "".join(parts) + "</div>"


def _cell(name: str, revision: str, r: NodeResult | None) -> str:
    if r is None:
        return f'<td class="cell na" data-node="{escape(name)}" data-revision="{escape(revision)}" ' \
               'data-outcome="" title="not declared at this commit"></td>'
    o = str(r.outcome)
    title = f"{name} at {revision[:12]}: {o}" + (f" ({r.reason})" if r.reason else "")
    href = f"/ui/nodes/{quote(name)}?commit={quote(revision)}#r-{quote(revision)}"
    return (
        f'<td class="cell o-{o}" data-node="{escape(name)}" data-revision="{escape(revision)}" '
        f'data-outcome="{o}" title="{escape(title)}"><a href="{href}">{SYMBOL[r.outcome]}'
        f'<span hidden> {o}</span></a></td>'
    )


def render_dashboard(commits: Sequence[CommitResult], now: float, timeout: float) -> bytes:
    """Commits (newest first) down, every node any of them declares across."""
    names: list[str] = sorted({n.node for c in commits for n in c.nodes if n.node is not None})
    head = "".join(
        f'<th class="node"><a href="/ui/nodes/{quote(n)}">{escape(n)}</a></th>' for n in names
    )
    rows = []
    for i, c in enumerate(commits):
        by_name = {n.node: n for n in c.nodes if n.node is not None}
        cells = "".join(_cell(n, c.revision, by_name.get(n)) for n in names)
        others = [n for n in c.nodes if n.node is None]
        extra = f'<div class="muted">{len(others)} unknown machine(s) netbooted it</div>' if others else ""
        rows.append(
            f'<tr class="{"current" if i == 0 else ""}" id="r-{escape(c.revision)}" '
            f'data-revision="{escape(c.revision)}">'
            f'<th class="commit"><code>{escape(c.revision[:12])}</code>'
            f'<div class="muted">{escape(_when(c.applied))}</div>{_counts(c)}{extra}</th>{cells}</tr>'
        )
    if not commits:
        table = '<p class="muted">No revision has been applied yet.</p>'
    else:
        table = (
            f'<table class="grid" id="results"><thead><tr><th>commit</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>'
        )
    body = (
        "<h1>netboot-reconcile: boot results</h1>"
        f'<p class="muted">Newest commit first; a cell is how that node\'s boot of that commit went '
        f"(boot timeout {timeout / 60:g} min). Click a cell for the node's event timeline. "
        f"Generated {escape(_when(now))}; refreshes every 30 s. JSON: <a href=\"/api/commits\">/api/commits</a></p>"
        f"{_legend()}{table}"
    )
    return _page("boot results", body, refresh=True)


def _detail_text(detail: Mapping[str, Any]) -> str:
    return json.dumps(dict(detail), sort_keys=True, default=str)


def render_node(doc: Mapping[str, Any], commit: str | None) -> bytes:
    """A node's drift line and its event timeline at each revision (the clicked one first and open)."""
    name = str(doc["node"])
    revisions = list(doc["revisions"])
    if commit:
        revisions.sort(key=lambda r: 0 if str(r["revision"]).startswith(commit) else 1)
    drift = (
        f'<p>desired revision <code>{escape(str(doc["desired_revision"] or "-")[:12])}</code>, last booted '
        f'<code>{escape(str(doc["last_booted_revision"] or "-")[:12])}</code> '
        f'({escape(str(doc["last_outcome"]))}): '
        + ('<span class="badge o-failed">drift</span>' if doc["drift"]
           else '<span class="badge o-succeeded">in sync</span>')
        + "</p>"
    )
    sections = []
    for r in revisions:
        rev = str(r["revision"])
        o = str(r["outcome"])
        events = "".join(
            f"<tr data-stage=\"{escape(str(e['stage']))}\"><td class=\"mono\">{escape(_when(e['time']))}</td>"
            f"<td>{escape(str(e['stage']))}</td><td class=\"mono\">{escape(str(e['client'] or '-'))}</td>"
            f"<td><pre>{escape(_detail_text(e['detail']))}</pre></td></tr>"
            for e in r["events"]
        )
        table = (
            f'<table class="timeline"><thead><tr><th>time</th><th>stage</th><th>client</th><th>detail</th></tr>'
            f"</thead><tbody>{events}</tbody></table>" if events else '<p class="muted">No events.</p>'
        )
        sections.append(
            f'<section id="r-{escape(rev)}" data-revision="{escape(rev)}" data-outcome="{escape(o)}">'
            f'<h2><code>{escape(rev[:12])}</code> <span class="badge o-{escape(o)}">{SYMBOL.get(o, "?")} '
            f"{escape(o)}</span></h2>"
            f'<p class="muted">{escape(str(r["reason"] or "no result"))}; started {escape(_when(r["started"]))}, '
            f'finished {escape(_when(r["finished"]))}, attempts {r["attempts"]}</p>{table}</section>'
        )
    body = (
        f'<p><a href="/ui/">&larr; all commits</a></p><h1>{escape(name)} <span class="muted mono">'
        f'{escape(str(doc["mac"]))}</span></h1>{drift}{"".join(sections)}'
    )
    return _page(f"{name}: boot timeline", body)


def render_missing(message: str) -> bytes:
    return _page("not found", f'<p><a href="/ui/">&larr; all commits</a></p><p>{escape(message)}</p>')
