"""The `/ui/` dashboard as server-rendered HTML: the daemon's condition, every commit it saw with
its rollout, the fleet, a node's boot waterfall, unknown machines.

Called by `servers.http_results.DashboardApp` with values from `core.outcomes`. Nothing fetched
from elsewhere: inline CSS and SVG, links for navigation, and one small inline script that polls
`/api/live` and, when its stamp changes, fetches the same page and swaps its `<main>` (no
reload). Without JavaScript the page is complete and a `<noscript>` refresh keeps it current.
Every outcome is text and symbol, not colour only, and carried in `data-*` attributes (tests
read the DOM).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any, NamedTuple
from urllib.parse import quote

from reconciler.core import outcomes
from reconciler.core.events import Stage
from reconciler.core.model import BootEvent
from reconciler.core.outcomes import CommitInfo, CommitResult, NodeDrift, NodeResult, Outcome, PlanRun
from reconciler.servers.dashboard_rollout import rollout_panel

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
:root { --ok:#1a7f37; --bad:#cf222e; --late:#9a6700; --run:#0969da; --disk:#57606a; --none:#d0d7de; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1f2328; }
main { padding: 1rem 1.5rem; }
header.status { background: #24292f; color: #fff; padding: .6rem 1.5rem; display: flex; flex-wrap: wrap;
  gap: .4rem 1.2rem; align-items: center; }
header.status a { color: #fff; } header.status .title { font-weight: 700; font-size: 1.05rem; }
header.status nav a { margin-right: .8rem; }
.pill { display: inline-block; padding: .05rem .55rem; border-radius: 1rem; font-size: .85rem; font-weight: 600;
  color: #fff; background: var(--disk); }
.c-Ready, .s-running, .s-applied { background: var(--ok); }
.c-Stalled, .s-down, .s-rejected { background: var(--bad); }
.c-Reconciling, .s-failed, .s-starting { background: var(--late); } .s-superseded { background: #8c959f; }
h1 { font-size: 1.3rem; margin: .2rem 0 .4rem; } h2 { font-size: 1.1rem; margin: 1.4rem 0 .5rem; }
.muted { color: #57606a; } code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
table { border-collapse: collapse; }
th, td { border: 1px solid #d0d7de; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
.bar { display: flex; width: 16rem; height: .9rem; border-radius: 3px; overflow: hidden; background: var(--none); }
.bar span { display: block; height: 100%; }
.o-succeeded { background: var(--ok); } .o-failed { background: var(--bad); } .o-timed-out { background: var(--late); }
.o-booting, .o-installing { background: var(--run); } .o-local-disk { background: var(--disk); }
.o-pending { background: var(--none); color: #1f2328 !important; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 1rem; color: #fff; font-size: .85rem; }
.counts span { margin-right: .6rem; white-space: nowrap; }
.findings { margin: .3rem 0 0; padding-left: 1.2rem; color: var(--bad); }
.legend span { display: inline-block; margin-right: .8rem; }
.legend b { display: inline-block; width: 1.4rem; text-align: center; color: #fff; border-radius: 3px; }
.pager a, .pager span { margin-right: .6rem; }
svg text { font: 11px system-ui, sans-serif; fill: #1f2328; }
a { color: #0969da; }
"""

# Polls /api/live; on a new stamp, fetches this page and swaps <main> (nothing when JS is off).
LIVE_JS = """
(function () {
  var stamp = document.body.getAttribute('data-stamp');
  function swap(text) {
    var doc = new DOMParser().parseFromString(text, 'text/html');
    var fresh = doc.querySelector('main'), old = document.querySelector('main');
    if (fresh && old) { old.replaceWith(fresh); }
    stamp = doc.body.getAttribute('data-stamp');
    document.body.setAttribute('data-stamp', stamp);
    document.body.setAttribute('data-refreshed', String(Date.now()));
  }
  function poll() {
    fetch('/api/live', {cache: 'no-store'}).then(function (r) { return r.json(); }).then(function (live) {
      if (live.stamp === stamp) { return null; }
      return fetch(location.pathname + location.search, {cache: 'no-store'})
        .then(function (r) { return r.text(); }).then(swap);
    }).catch(function () {}).then(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 2000);
})();
"""


@dataclass(frozen=True)
class Paging:
    page: int  # from 1
    size: int
    total: int
    site: str | None = None  # the view's `?site=`, kept by the links to other pages

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    def links(self, base: str) -> str:
        if self.pages <= 1:
            return ""
        site = f"site={escape(quote(self.site, safe=''))}&amp;" if self.site else ""
        out = [f'<span>page {self.page} of {self.pages} ({self.total})</span>']
        if self.page > 1:
            out.append(f'<a rel="prev" href="{base}?{site}page={self.page - 1}">&larr; newer</a>')
        if self.page < self.pages:
            out.append(f'<a rel="next" href="{base}?{site}page={self.page + 1}">older &rarr;</a>')
        return '<p class="pager">' + "".join(out) + "</p>"


def when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def short(revision: str | None) -> str:
    return escape((revision or "-")[:12])


def _page(title: str, status: Mapping[str, Any], body: str, stamp: str) -> bytes:
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width\">"
        "<noscript><meta http-equiv=\"refresh\" content=\"30\"></noscript>"
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body data-stamp=\"{escape(stamp)}\">{_header(status)}<main>{body}</main>"
        f"<script>{LIVE_JS}</script></body></html>\n"
    ).encode()


def _header(status: Mapping[str, Any]) -> str:
    """The daemon's condition and each server's state (from /status)."""
    nav = '<nav><a href="/ui/">commits</a><a href="/ui/fleet">fleet</a><a href="/status">/status</a></nav>'
    nav += _site_nav(status)
    if not status:
        return f'<header class="status"><span class="title">netboot-reconcile</span>{nav}</header>'
    condition = str(status.get("condition", "?"))
    reason = str(status.get("reason", ""))
    message = str(status.get("message") or "")
    servers = "".join(
        f'<span class="server" data-server="{escape(name)}" data-state="{escape(str(s.get("state", "?")))}">'
        f'{escape(name)} <span class="pill s-{escape(str(s.get("state", "?")))}">{escape(str(s.get("state", "?")))}'
        f"</span>{(' ' + escape(str(s['error']))) if s.get('error') else ''}</span>"
        for name, s in sorted(dict(status.get("servers") or {}).items())
    )
    desired, applied = status.get("desired_revision"), status.get("last_applied_revision")
    revisions = f'applied <code>{short(applied)}</code>'
    if desired and desired != applied:
        revisions += f', desired <code>{short(desired)}</code>'
    return (
        f'<header class="status" id="daemon" data-condition="{escape(condition)}">'
        f'<span class="title">netboot-reconcile</span>{nav}'
        f'<span>daemon <span class="pill c-{escape(condition)}">{escape(condition)}</span> {escape(reason)}'
        f'{(": " + escape(message[:200])) if message else ""}</span><span>{revisions}</span>{servers}</header>'
    )


def _site_nav(status: Mapping[str, Any]) -> str:
    """With a store several sites share (`ui_sites` from DashboardApp): every site, the one shown
    (`ui_site`, None: all) marked; links keep the page and take `?site=`."""
    sites = [s for s in status.get("ui_sites") or () if s]
    if not sites:
        return ""
    current = status.get("ui_site")
    mark = ' aria-current="page"'
    links = [f'<a href="?"{mark if current is None else ""}>all sites</a>']
    links += [f'<a href="?site={escape(s)}"{mark if s == current else ""}>{escape(s)}</a>' for s in sites]
    return f'<nav class="sites" aria-label="sites">{"".join(links)}</nav>'


def _legend() -> str:
    items = "".join(f'<span><b class="o-{o}">{SYMBOL[o]}</b> {escape(str(o))}</span>' for o in Outcome)
    return f'<p class="legend">{items}</p>'


_BAR = (("succeeded", "succeeded"), ("local_disk", "local-disk"), ("failed", "failed"),
        ("timed_out", "timed-out"), ("in_progress", "installing"), ("pending", "pending"))


def rollout_bar(result: CommitResult) -> str:
    """succeeded / failed / in progress / pending of the targeted nodes, as one bar and in words."""
    c, total = result.counts, max(result.targeted, 1)
    spans = "".join(
        f'<span class="o-{cls}" style="width:{100 * c.get(key, 0) / total:.3f}%" title="{c.get(key, 0)} '
        f'{key.replace("_", " ")}"></span>'
        for key, cls in _BAR if c.get(key, 0)
    )
    words = [f"{result.targeted} targeted"] + [f"{c[k]} {k.replace('_', ' ')}" for k, _ in _BAR if c.get(k)]
    if c.get("other_machines"):
        words.append(f"{c['other_machines']} other machine(s)")
    data = " ".join(f'data-{k.replace("_", "-")}="{c.get(k, 0)}"' for k, _ in _BAR)
    return (f'<div class="rollout" data-targeted="{result.targeted}" {data}><div class="bar">{spans}</div>'
            f'<div class="counts muted">{"".join(f"<span>{escape(w)}</span>" for w in words)}</div></div>')


def _findings(info: CommitInfo) -> str:
    if not info.findings:
        return f'<p class="findings">{escape(info.reason)}</p>' if info.reason else ""
    items = "".join(
        f'<li><code>{escape(str(f.get("file", "")))}:{escape(str(f.get("line", "")))}</code> '
        f'{escape(str(f.get("code", "")))}: {escape(str(f.get("message", "")))}</li>'
        for f in info.findings[:20]
    )
    more = f"<li>… {len(info.findings) - 20} more</li>" if len(info.findings) > 20 else ""
    return f'<ul class="findings">{items}{more}</ul>'


def _commit_row(info: CommitInfo, result: CommitResult | None, serving: str | None) -> str:
    state = str(info.state(serving))
    rev = escape(info.revision)
    subject = escape(info.subject or "(no subject recorded)")
    who = escape(info.author.split(" <", 1)[0]) if info.author else "-"
    at = when(info.committed if info.committed is not None else info.seen)
    rollout = rollout_bar(result) if result is not None else (
        _findings(info) if state == "rejected" else f'<p class="muted">{escape(info.reason)}</p>')
    return (
        f'<tr class="commit" id="c-{rev}" data-revision="{rev}" data-state="{state}">'
        f'<td><a href="/ui/commits/{rev}"><code>{short(info.revision)}</code></a> '
        f'<span class="pill s-{state}">{state}</span></td>'
        f'<td class="subject">{subject}<div class="muted">{who} · {escape(at)}</div></td>'
        f"<td>{rollout}</td></tr>"
    )


def render_overview(
    status: Mapping[str, Any],
    infos: Sequence[CommitInfo],
    results: Mapping[str, CommitResult],
    serving: str | None,
    unknown: Sequence[Mapping[str, Any]],
    paging: Paging,
    now: float,
    timeout: float,
    stamp: str,
) -> bytes:
    if infos:
        rows = "".join(_commit_row(i, results.get(i.revision), serving) for i in infos)
        table = (f'<table id="commits"><thead><tr><th>commit</th><th>subject</th><th>rollout</th></tr></thead>'
                 f"<tbody>{rows}</tbody></table>{paging.links('/ui/')}")
    else:
        table = '<p class="muted">No commit seen yet.</p>'
    body = (
        "<h1>Commits</h1>"
        f'<p class="muted">Every commit the daemon saw, newest first: applied (served now), superseded, '
        "rejected (never served; its findings below it) or failed (retried while it is the newest). "
        "A node's result carries over to a commit that does not change what it boots. "
        f"Boot timeout {timeout / 60:g} min. Generated {escape(when(now))}. "
        f'JSON: <a href="/api/commits">/api/commits</a></p>{rollout_panel(status.get("rollout"))}{_legend()}{table}'
        f"{_unknown(unknown)}"
    )
    return _page("netboot-reconcile: commits", status, body, stamp)


def _unknown(machines: Sequence[Mapping[str, Any]]) -> str:
    if not machines:
        return '<h2>Unknown machines</h2><p class="muted" id="unknown">None heard from in the last 7 days.</p>'
    rows = "".join(
        f'<tr data-mac="{escape(m["mac"])}"><td class="mono">{escape(m["mac"])}</td>'
        f'<td>{escape(m["vendor_class"] or "-")}</td><td>{escape(m["group"])}</td>'
        f'<td>{escape(m["last_stage"])}</td><td>{escape(when(m["last_seen"]))}</td><td>{m["events"]}</td></tr>'
        for m in machines
    )
    return (
        '<h2>Unknown machines</h2><p class="muted">MACs no node of the serving commit declares, heard from in the '
        "last 7 days. Add a <code>nodes/&lt;name&gt;.yaml</code> with the MAC to manage one.</p>"
        '<table id="unknown"><thead><tr><th>MAC</th><th>vendor class</th><th>group it would match</th>'
        f"<th>last event</th><th>last seen</th><th>events</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def render_fleet(status: Mapping[str, Any], nodes: Sequence[NodeDrift], paging: Paging, now: float,
                 stamp: str) -> bytes:
    rows = "".join(
        f'<tr data-node="{escape(n.node)}" data-outcome="{n.last_outcome}" data-drift="{str(n.drift).lower()}">'
        f'<td><a href="/ui/nodes/{quote(n.node)}">{escape(n.node)}</a>'
        f'<div class="muted mono">{escape(n.mac)}</div></td><td>{escape(n.profile or "-")} '
        f'<code class="muted">{escape((n.serving_plan or "-")[:8])}</code>'
        + (' <span class="badge o-failed">drift</span>' if n.drift
           else ' <span class="badge o-succeeded">in sync</span>')
        + f'</td><td><span class="badge o-{n.last_outcome}">{SYMBOL[n.last_outcome]} {n.last_outcome}</span>'
        f'<div class="muted">{escape(n.last.reason if n.last else "never netbooted")}</div></td>'
        + (f'<td>{escape(when(n.last.started))}<div class="muted">from <code>{short(n.last_booted)}</code></div></td>'
           if n.last is not None else "<td>never</td>")
        + f"<td>{escape(seconds(n.install_seconds))}</td></tr>"
        for n in nodes
    )
    table = (
        '<table id="fleet"><thead><tr><th>node</th><th>current plan</th><th>last outcome</th><th>last boot</th>'
        f"<th>time to install</th></tr></thead><tbody>{rows}</tbody></table>{paging.links('/ui/fleet')}"
        if nodes else '<p class="muted">No applied commit declares a node yet.</p>'
    )
    body = (
        f"<h1>Fleet</h1><p class=\"muted\">Every node of the serving commit by name ({paging.total}). Drift: the "
        "plan the machine last booted differs from the one the serving commit gives it. Generated "
        f"{escape(when(now))}. JSON: <a href=\"/api/nodes\">/api/nodes</a></p>{table}"
    )
    return _page("netboot-reconcile: fleet", status, body, stamp)


def histogram(durations: Sequence[float], width: int = 420, height: int = 140) -> str:
    """Boot durations (first netboot step to result) as an SVG histogram, 10 bins from 0."""
    if not durations:
        return '<p class="muted" id="histogram">No finished boot yet.</p>'
    top = max(*durations, 1.0)
    bins = [0] * 10
    for d in durations:
        bins[min(int(d / top * 10), 9)] += 1
    most = max(bins)
    bw = (width - 40) / 10
    bars = []
    for i, count in enumerate(bins):
        h = (height - 40) * count / most
        x, y = 30 + i * bw, height - 25 - h
        bars.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" fill="#0969da">'
                    f"<title>{count} boot(s) of {seconds(top * i / 10)}–{seconds(top * (i + 1) / 10)}</title></rect>")
        if count:
            bars.append(f'<text x="{x + bw / 2 - 3:.1f}" y="{y - 3:.1f}">{count}</text>')
    axis = (f'<line x1="30" y1="{height - 25}" x2="{width - 10}" y2="{height - 25}" stroke="#57606a"/>'
            f'<text x="30" y="{height - 8}">0</text><text x="{width - 70}" y="{height - 8}">{seconds(top)}</text>'
            f'<text x="{width / 2 - 40:.0f}" y="{height - 8}">boot duration</text>')
    return (f'<svg id="histogram" role="img" aria-label="boot durations of {len(durations)} machines" '
            f'width="{width}" height="{height}" data-boots="{len(durations)}">{"".join(bars)}{axis}</svg>')


def render_commit(status: Mapping[str, Any], info: CommitInfo, result: CommitResult | None, serving: str | None,
                  now: float, stamp: str) -> bytes:
    state = str(info.state(serving))
    head = (
        f'<p><a href="/ui/">&larr; all commits</a></p><h1 id="commit" data-revision="{escape(info.revision)}" '
        f'data-state="{state}"><code>{short(info.revision)}</code> {escape(info.subject)} '
        f'<span class="pill s-{state}">{state}</span></h1>'
        f'<p class="muted">{escape(info.author or "-")} · committed {escape(when(info.committed))} · seen '
        f"{escape(when(info.seen))} · applied {escape(when(info.applied))}</p>"
    )
    if result is None:
        body = head + ("<h2>Findings (never served)</h2>" + _findings(info) if state == "rejected"
                       else f'<p>{escape(info.reason or "not applied")}</p>')
        return _page(f"commit {info.revision[:12]}", status, body, stamp)
    durations = [r.finished - r.started for r in result.nodes
                 if r.node is not None and r.finished is not None and r.started is not None
                 and r.outcome in (Outcome.SUCCEEDED, Outcome.FAILED)]
    rows = "".join(
        f'<tr data-node="{escape(r.node or "")}" data-mac="{escape(r.mac or "")}" data-outcome="{r.outcome}">'
        f'<td>{_node_link(r)}</td><td><span class="badge o-{r.outcome}">{SYMBOL[r.outcome]} {r.outcome}</span></td>'
        f'<td>{escape(r.reason or "-")}</td><td>{escape(when(r.started))}</td>'
        f'<td>{escape(seconds(r.finished - r.started if r.finished and r.started else None))}</td>'
        f'<td><code>{short(r.booted_revision)}</code></td></tr>'
        for r in sorted(result.nodes, key=_attention)[:500]
    )
    more = f'<p class="muted">… and {len(result.nodes) - 500} more: see the fleet view.</p>' \
        if len(result.nodes) > 500 else ""
    body = (
        head + rollout_bar(result) + "<h2>Boot durations</h2>" + histogram(durations)
        + '<h2>Machines</h2><table id="nodes"><thead><tr><th>node</th><th>outcome</th><th>detail</th><th>started</th>'
        f"<th>took</th><th>booted from</th></tr></thead><tbody>{rows}</tbody></table>{more}"
    )
    return _page(f"commit {info.revision[:12]}", status, body, stamp)


_ATTENTION = {Outcome.FAILED: 0, Outcome.TIMED_OUT: 1, Outcome.INSTALLING: 2, Outcome.BOOTING: 3,
              Outcome.PENDING: 4, Outcome.SUCCEEDED: 5, Outcome.LOCAL_DISK: 6}


def _attention(r: NodeResult) -> tuple[int, str]:
    """Failures first, then what is under way, what has not started, and what is done."""
    return _ATTENTION[r.outcome], r.node or r.mac or ""


def _node_link(r: NodeResult) -> str:
    if r.node is None:
        return f'<span class="mono">{escape(r.mac or "?")}</span> <span class="muted">(unknown)</span>'
    return f'<a href="/ui/nodes/{quote(r.node)}">{escape(r.node)}</a>'


# -- a node: waterfall and events in words ---------------------------------------------------------

WATERFALL = ("DHCP", "TFTP", "script", "kernel", "initrd", "root image", "seed", "report")


def phase_of(stage: str) -> str | None:
    if stage.startswith("dhcp"):
        return "DHCP"
    return _PHASES.get(stage)


_PHASES: Mapping[str, str] = {
    Stage.TFTP: "TFTP", Stage.IPXE_BOOTSTRAP: "script", Stage.IPXE_SCRIPT: "script", Stage.GRUB: "script",
    Stage.KERNEL: "kernel", Stage.INITRD: "initrd", Stage.ASSET: "root image",
    Stage.USER_DATA: "seed", Stage.META_DATA: "seed", Stage.VENDOR_DATA: "seed",
    Stage.NETWORK_CONFIG: "seed",
    Stage.REPORT: "report", Stage.AUTOINSTALL: "report", Stage.PHONE_HOME: "report",
}


class Phase(NamedTuple):
    name: str
    start: float
    end: float
    failed: bool  # every step of it was refused or broken off (`outcomes.delivered`)


def phases(events: Sequence[BootEvent], started: float | None) -> list[Phase]:
    """The phases of one attempt: each from its first event to the next phase's first event (the
    last one to its own last event). The attempt counts from its first netboot step (`started`; a
    reinstall's is its kernel download), and the DHCP, TFTP and script steps up to 10 min before
    it that came after the previous attempt's last report. A phase with a step the machine got is
    timed by those steps; one whose every step failed (a kernel download broken off, a TFTP size
    probe alone) is kept, marked failed."""
    if started is None:
        return []
    earlier = [e.time for e in events if phase_of(e.stage) == "report" and e.time < started]
    lower = max([started - 600, *earlier])
    got: dict[str, list[float]] = {}
    failed: dict[str, list[float]] = {}
    for e in events:
        phase = phase_of(e.stage)
        if phase is None or (e.time < started and (e.time <= lower or phase not in ("DHCP", "TFTP", "script"))):
            continue
        (got if outcomes.delivered(e) else failed).setdefault(phase, []).append(e.time)
    times = {phase: got.get(phase) or failed[phase] for phase in {*got, *failed}}
    order = sorted(times, key=lambda p: (times[p][0], WATERFALL.index(p)))
    out = []
    for i, phase in enumerate(order):
        first, last = times[phase][0], times[phase][-1]
        end = times[order[i + 1]][0] if i + 1 < len(order) else last
        out.append(Phase(phase, first, max(end, last) if i + 1 == len(order) else end, phase not in got))
    return out


def waterfall(events: Sequence[BootEvent], started: float | None, width: int = 640) -> str:
    """The stages of a boot as horizontal bars on one time axis, with their durations."""
    rows = phases(events, started)
    if not rows:
        return '<p class="muted" id="waterfall">No boot recorded.</p>'
    t0 = rows[0].start
    span = max(max(row.end for row in rows) - t0, 1.0)
    scale = (width - 230) / span
    parts = []
    for i, (phase, start, end, failed) in enumerate(rows):
        y = 8 + i * 22
        x = 90 + (start - t0) * scale
        w = max((end - start) * scale, 3)
        fill, said = ("#cf222e", f"{seconds(end - start)}, failed") if failed else ("#0969da", seconds(end - start))
        mark = ' data-failed="1"' if failed else ""
        parts.append(
            f'<g data-phase="{escape(phase)}" data-seconds="{end - start:.3f}"{mark}>'
            f'<text x="4" y="{y + 12}">{escape(phase)}'
            f'</text><rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="15" rx="2" fill="{fill}"/>'
            f'<text x="{x + w + 5:.1f}" y="{y + 12}">{escape(said)}</text></g>'
        )
    height = 16 + len(rows) * 22
    return (f'<svg id="waterfall" role="img" aria-label="boot stages and their durations" width="{width}" '
            f'height="{height}">{"".join(parts)}</svg>')


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return ""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def describe(e: BootEvent) -> str:
    """One event in words."""
    d = e.detail
    status = d.get("status")
    refused = isinstance(status, int) and status >= 400
    path = str(d.get("path") or d.get("filename") or "")
    if e.stage == "dhcp-ignored":
        client = f" from {d['vendor_class']}" if d.get("vendor_class") else ""
        return f"DHCP {d.get('message', '?')}{client} not answered: {d.get('reason') or 'unknown client'}"
    if e.stage.startswith("dhcp"):
        kind = "ProxyDHCP" if d.get("proxy") else "DHCP"
        said = f"{kind} {d.get('message', '?')} answered with {e.stage.removeprefix('dhcp-').upper()}"
        bits = [f"address {d['ip']}" if d.get("ip") else "", f"boot file {d['filename']}" if d.get("filename") else "",
                f"client {d['vendor_class']}" if d.get("vendor_class") else "",
                f"arch {d['arch']}" if d.get("arch") is not None else ""]
        return said + (": " + ", ".join(b for b in bits if b) if any(bits) else "")
    if refused:
        return f"asked for {e.stage} {path} and was refused: HTTP {status}" + (
            f" ({d['refused']})" if d.get("refused") else "")
    # the TFTP server records the file as `file`; a kernel or initrd it sent is its own stage
    # (`via: tftp`), said as such unless the transfer failed
    if e.stage == "tftp" or (d.get("via") == "tftp" and not outcomes.delivered(e)):
        what = "" if e.stage == "tftp" else f"the {e.stage} "
        file, result = what + str(d.get("file") or path), d.get("result", "ok")
        if result == "ok":
            return f"TFTP sent {file} ({_size(d.get('bytes'))})"
        if result == "size-probe":  # RFC 2347: the firmware asked the size, then closed (OVMF does)
            return f"TFTP size probe of {file}: the client learned its size and closed the transfer"
        said = {"error": f"TFTP refused {file}", "aborted": f"TFTP transfer of {file} aborted by the client"}.get(
            str(result), f"TFTP transfer of {file} failed")
        return said + (f": {d['error']}" if d.get("error") else "") + (
            f" after {_size(d.get('bytes'))}" if d.get("bytes") else "")
    if e.stage == "ipxe-bootstrap":
        return "iPXE fetched the bootstrap script"
    if e.stage in ("ipxe-script", "grub"):
        loader = "iPXE" if e.stage == "ipxe-script" else "GRUB"
        if d.get("local_disk"):
            return f"{loader} was told to boot the local disk ({d['local_disk']})"
        return f"{loader} fetched its boot script"
    if e.stage in ("kernel", "initrd", "asset"):
        what = {"kernel": "the kernel", "initrd": "the initrd", "asset": "the root image"}[e.stage]
        size = _size(d.get("bytes"))
        if d.get("result", "ok") != "ok":
            return f"download of {what} {path} broken off by the client after {size or '0 bytes'}" + (
                f" of {_size(d.get('length'))}" if d.get("length") else "")
        return f"downloaded {what} {path}" + (f" ({size})" if size else "")
    if e.stage in outcomes.SEED_STAGES:
        return f"cloud-init fetched its NoCloud {e.stage}"
    if e.stage == "report":
        message = str(d.get("message") or "").strip()
        return f"reported {d.get('status', '?')}" + (f": {message}" if message else "")
    if e.stage == "autoinstall":
        text = str(d.get("description") or d.get("name") or "?")
        result = f" → {d['result']}" if d.get("result") else ""
        return f"installer {d.get('event_type', '')} {text}{result}".replace("  ", " ")
    if e.stage == "phone-home":
        return f"cloud-init phoned home: the OS is up (hostname {d.get('hostname', '?')})"
    return f"{e.stage} {path}".strip()


def _events(events: Sequence[BootEvent]) -> str:
    if not events:
        return '<p class="muted">No events.</p>'
    rows = "".join(
        f'<tr data-stage="{escape(e.stage)}"><td class="mono">{escape(when(e.time))}</td>'
        f'<td>{escape(phase_of(e.stage) or e.stage)}</td><td>{escape(describe(e))}</td>'
        f'<td class="mono">{escape(e.client or "-")}</td><td><code>{short(e.revision)}</code></td></tr>'
        for e in events
    )
    return ('<table class="timeline"><thead><tr><th>time</th><th>stage</th><th>what happened</th><th>from</th>'
            f"<th>revision</th></tr></thead><tbody>{rows}</tbody></table>")


def render_node(status: Mapping[str, Any], name: str, runs: Sequence[PlanRun], drift: NodeDrift,
                events: Sequence[BootEvent], now: float, stamp: str) -> bytes:
    """A node: its plan against what it last booted, the waterfall of its latest boot, and per run of
    commits serving it one plan, the result and the events in words."""
    last = drift.last
    sync = ('<span class="badge o-failed">drift</span>' if drift.drift
            else '<span class="badge o-succeeded">in sync</span>')
    line = (
        f'<p id="drift" data-drift="{str(drift.drift).lower()}">serving commit <code>{short(drift.serving)}</code> '
        f'gives it plan <code>{escape((drift.serving_plan or "-")[:16])}</code>; it last booted plan '
        f'<code>{escape((drift.last_plan or "-")[:16])}</code> from <code>{short(drift.last_booted)}</code> '
        f"({escape(str(drift.last_outcome))}): {sync}</p>"
    )
    latest = waterfall(last.events, last.started) if last is not None else waterfall((), None)
    sections = []
    for run in runs:
        r = run.result
        o = str(r.outcome)
        also = f" and {run.count - 1} earlier commit(s) serving the same plan" if run.count > 1 else ""
        sections.append(
            f'<section id="r-{escape(run.revisions[0])}" data-revision="{escape(run.revisions[0])}" '
            f'data-outcome="{escape(o)}" data-plan="{escape(run.plan)}">'
            f'<h3><a href="/ui/commits/{escape(run.revisions[0])}"><code>{short(run.revisions[0])}</code></a>{also} '
            f'<span class="badge o-{escape(o)}">{SYMBOL.get(o, "?")} {escape(o)}</span></h3>'
            f'<p class="muted">{escape(r.reason or "no result")}; started {escape(when(r.started))}, '
            f'finished {escape(when(r.finished))}, attempts {r.attempts}</p>{_events(r.events)}</section>'
        )
    body = (
        f'<p><a href="/ui/fleet">&larr; fleet</a></p><h1>{escape(name)} <span class="muted mono">'
        f'{escape(drift.mac)}</span></h1>{line}<h2>Latest boot</h2>{latest}'
        f'<h2>By plan, newest first</h2>{"".join(sections)}'
    )
    return _page(f"{name}: boots", status, body, stamp)


def render_missing(message: str) -> bytes:
    return _page("not found", {}, f'<p><a href="/ui/">&larr; all commits</a></p><p>{escape(message)}</p>', "")
