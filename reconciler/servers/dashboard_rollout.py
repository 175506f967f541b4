"""The /ui/ overview's rollout panel, from /status's `rollout` (`core.rollout.summary`).

Called by `servers.http_dashboard.render_overview`. Each node of the current rollout with its
state (waiting, in flight, done, failed, needs a manual reboot) and why; the rollout's state and
why it is paused. Pure string building; JSON of the whole is at /api/rollouts.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any


def rollout_panel(rollout: Mapping[str, Any] | None) -> str:
    if not rollout:
        return ""
    state = str(rollout.get("state", "?"))
    why = str(rollout.get("paused") or "")
    counts = ", ".join(f"{n} {escape(str(k))}" for k, n in dict(rollout.get("counts") or {}).items() if n)
    rows = "".join(
        f'<tr data-node="{escape(name)}" data-state="{escape(text.split(":", 1)[0])}"><td>{escape(name)}</td>'
        f'<td>{escape(text.split(":", 1)[0])}</td><td>{escape(text.split(":", 1)[1].strip() if ":" in text else "")}'
        "</td></tr>"
        for name, text in sorted(dict(rollout.get("nodes") or {}).items()))
    return (
        f'<section id="rollout" data-state="{escape(state)}"><h2>Rollout of '
        f'<code>{escape(str(rollout.get("revision", ""))[:12])}</code>: {escape(state)}</h2>'
        + (f'<p class="why">{escape(why)}</p>' if why else "")
        + f'<p class="muted">{counts}. JSON: <a href="/api/rollouts">/api/rollouts</a></p>'
        '<table><thead><tr><th>node</th><th>state</th><th>why</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></section>"
    )
