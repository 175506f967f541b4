"""Boot results over HTTP: `/report/...` callbacks from machines, `/api/...` JSON, the `/ui/` dashboard.

Built by the daemon's run command (`make_results_apps(...)`) and mounted on the boot HTTP server
through `make_boot_app(..., extra=...)`; `ResultsRecorder` wraps the results store as the
servers' `EventSink` (it counts `netboot_boot_events_total{stage}` and remembers which revision
last served each machine an install step). Outcome logic lives in `reconciler.core.outcomes`;
the HTML in `reconciler.servers.http_dashboard`.

Reports (a machine waits for the answer, so they are written durably BEFORE the 2xx):
- `POST /report/<mac>`: `{"status": "success"|"failure"|..., "message": "...", "revision": optional}`
  as JSON or a form (any initramfs: `wget --post-data`, `curl -d`);
- `POST /report/autoinstall/<mac>`: Subiquity/curtin `reporting: {type: webhook}` events (JSON);
- `POST /report/phone-home/<mac>`: cloud-init `phone_home` (form: instance_id, hostname, pub keys).
Whether a report is accepted and which revision it counts for is `core.reports.decide_report`
(from the node's reserved or leased address, or with the node's token); this app gathers the
facts, answers 403/404 and counts refusals in `netboot_reports_refused_total{reason}`. A success
report (plain success, phone_home, the autoinstall's final SUCCESS) also records the install
that `install_once` reads.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Self
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from reconciler.adapters import sqldb
from reconciler.adapters.store import ResultsQueries, ResultsStore
from reconciler.core import outcomes, reports, select
from reconciler.core.boot import parse_mac
from reconciler.core.events import EventRow, Stage, event_of, row_of
from reconciler.core.model import BootEvent, Node
from reconciler.generation import Generation, GenerationHolder
from reconciler.servers import http_dashboard

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
MAX_REPORT_BYTES = 1024 * 1024
COMMITS_PER_PAGE = 20
NODES_PER_PAGE = 100
TOKEN_HEADER = "HTTP_X_NETBOOT_TOKEN"  # noqa: S105 (a header name)


def _respond(start_response: StartResponse, status: str, body: bytes, content_type: str) -> list[bytes]:
    start_response(
        status, [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
    )
    return [body]


def _json(start_response: StartResponse, status: str, doc: Any) -> list[bytes]:
    return _respond(start_response, status, (json.dumps(doc, indent=2) + "\n").encode(), "application/json")


class ResultsRecorder:
    """The servers' EventSink: counts events by stage, remembers serving revisions, forwards to the store."""

    def __init__(self, store: ResultsStore, registry: CollectorRegistry) -> None:
        self.store = store
        self.events_total = Counter(
            "netboot_boot_events", "Boot events seen, by stage", ["stage"], registry=registry
        )
        self._serving: dict[str, str] = {}  # mac -> revision that last served it an install step
        self._lock = threading.Lock()
        self._by_stage: dict[str, Any] = {}  # stage -> its counter child: labels() costs more than inc()

    def record(self, event: BootEvent) -> None:
        self.record_rows((row_of(event),))

    def record_rows(self, rows: Sequence[EventRow]) -> None:
        counts: dict[str, int] = {}
        for row in rows:
            stage = row[1]
            counts[stage] = counts.get(stage, 0) + 1
            if stage in outcomes.SERVING_STAGES:
                self._note_serving(event_of(row))
        for stage, count in counts.items():
            self._counter(stage).inc(count)
        self.store.record_rows(rows)

    def _counter(self, stage: str) -> Any:
        counter = self._by_stage.get(stage)
        if counter is None:
            counter = self._by_stage[stage] = self.events_total.labels(stage=stage)
        return counter

    def _note_serving(self, event: BootEvent) -> None:
        if (
            event.mac
            and event.revision
            and not outcomes.is_local_disk(event)
            and int(event.detail.get("status", 200) or 200) < 400
            and outcomes.delivered(event)  # not a download the machine broke off
        ):
            with self._lock:
                self._serving[event.mac] = event.revision

    def record_durable(self, event: BootEvent, install: tuple[str, str, int] | None = None) -> None:
        self._counter(event.stage).inc()
        self.store.record_durable(event, install)

    def serving_revision(self, mac: str) -> str | None:
        """The revision that last served `mac` an install step: this instance's memory, else the
        store (another instance's, or before a restart); None while the store cannot be read (the
        report then counts for the revision it names or the one served now)."""
        with self._lock:
            known = self._serving.get(mac)
        if known:
            return known
        try:
            return self.store.last_serving_revision(mac)
        except sqldb.StoreUnreachable:
            return None


class OutcomeCounter(Collector):
    """`netboot_boot_outcomes_total{result}`: attempts that reached a final outcome since start.

    Evaluated when scraped (at most every `min_interval` s) over the events of the last three boot
    timeouts, so `timed-out` is counted without a request to trigger it."""

    def __init__(
        self, store: ResultsStore, timeout: float, clock: Callable[[], float] = time.time, min_interval: float = 5.0
    ) -> None:
        self._store = store
        self._timeout = timeout
        self._clock = clock
        self._min_interval = min_interval
        self._seen: dict[tuple[str, str, float], float] = {}  # (revision, mac, started) -> started
        self._counts: dict[str, int] = {str(o): 0 for o in outcomes.TERMINAL}
        self._last = float("-inf")
        self._lock = threading.Lock()

    def sweep(self) -> None:
        now = self._clock()
        with self._lock:
            if now - self._last < self._min_interval:
                return
            self._last = now
            events = self._store.events_since(now - 3 * self._timeout)
            groups: dict[tuple[str, str], list[BootEvent]] = {}
            for e in events:
                if e.mac and e.revision:
                    groups.setdefault((e.revision, e.mac), []).append(e)
            for (revision, mac), evs in groups.items():
                r = outcomes.node_result(evs, revision=revision, now=now, timeout=self._timeout, mac=mac)
                if r.outcome in outcomes.TERMINAL and r.started is not None:
                    key = (revision, mac, r.started)
                    if key not in self._seen:
                        self._seen[key] = r.started
                        self._counts[str(r.outcome)] += 1
            horizon = now - 4 * self._timeout
            self._seen = {k: v for k, v in self._seen.items() if v >= horizon}

    def collect(self) -> Iterator[CounterMetricFamily]:
        try:
            self.sweep()
        except Exception:  # a scrape must not fail because the store is busy
            log.exception("outcome sweep failed")
        family = CounterMetricFamily(
            "netboot_boot_outcomes", "Boot attempts that reached a final outcome, by result", labels=["result"]
        )
        with self._lock:
            for result, count in sorted(self._counts.items()):
                family.add_metric([result], count)
        yield family


class ReportApp:
    """`/report/...`: gather the facts for `core.reports.decide_report`, write durably, then answer."""

    def __init__(
        self,
        holder: GenerationHolder,
        recorder: ResultsRecorder,
        secret: bytes | None,
        registry: CollectorRegistry,
        mac_for_address: Callable[[str], str | None] | None = None,
        clock: Callable[[], float] = time.time,
        unstorable: Callable[[], str | None] = lambda: None,
        stored: Callable[[], Collection[str]] = lambda: (),
    ) -> None:
        self._holder = holder
        self._stored = stored  # revisions of the generations on disk (a token for any of them holds)
        self._unstorable = unstorable  # why a report cannot be stored now (read-only state directory)
        self._recorder = recorder
        self._secret = secret
        self._mac_for_address = mac_for_address
        self._clock = clock
        self.refused = Counter(
            "netboot_reports_refused", "Boot reports refused, by reason", ["reason"], registry=registry
        )

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        unstorable = self._unstorable()
        if unstorable is not None:  # answered before anything is read: the node retries later
            return _json(start_response, "503 Service Unavailable", {"error": unstorable})
        path: str = environ.get("PATH_INFO") or "/"
        parts = [p for p in path[len("/report") :].split("/") if p]
        if len(parts) == 1:
            kind, mac_text = "report", parts[0]
        elif len(parts) == 2 and parts[0] in ("autoinstall", "phone-home"):
            kind, mac_text = parts[0], parts[1]
        else:
            return _json(start_response, "404 Not Found",
                         {"error": "expected /report/<mac>, /report/autoinstall/<mac> or /report/phone-home/<mac>"})
        if environ.get("REQUEST_METHOD") != "POST":
            return _json(start_response, "405 Method Not Allowed", {"error": "POST only"})
        mac = parse_mac(mac_text)
        client = str(environ.get("REMOTE_ADDR") or "")
        if mac is None or mac.count(":") != 5:
            return self._refuse(start_response, "bad-mac", client, mac_text, f"{mac_text!r} is not a MAC address")
        length = _content_length(environ)
        if length is None:
            return _json(start_response, "400 Bad Request", {"error": "malformed Content-Length"})
        if length > MAX_REPORT_BYTES:
            return _json(start_response, "413 Content Too Large", {"error": f"body over {MAX_REPORT_BYTES} bytes"})
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}
        generations = self._generations()
        nodes = [(g.revision, node) for g in generations if (node := _node_in(g, mac)) is not None]
        current = self._holder.current()
        stored = self._stored_revisions() if nodes else frozenset()
        facts = reports.ReportFacts(
            mac=mac,
            client=client,
            nodes=nodes,
            token=str(environ.get(TOKEN_HEADER) or query.get("token") or ""),
            named_revision=str(query.get("revision") or ""),
            serving=self._recorder.serving_revision(mac) if nodes else None,
            leased_to=self._leased_to(client, mac) if nodes else None,
            current=current.revision if current is not None else None,
            kept=frozenset(g.revision for g in generations) | stored,
            stored=stored,
        )
        # The address and a header/query token are checked before the body is read: only a
        # report they admit, or one that may carry its token in the body, has its body parsed.
        decision = reports.decide_report(facts, self._secret)
        fields: dict[str, Any] = {}
        if decision.accepted or decision.refused == "wrong-address":
            body = _read_body(environ, length)
            if body is None:
                return _json(start_response, "413 Content Too Large", {"error": f"body over {MAX_REPORT_BYTES} bytes"})
            try:
                fields = reports.parse_report_body(body, str(environ.get("CONTENT_TYPE") or ""))
            except reports.UnreadableReport as exc:
                log.info("report %s from %s unreadable revision=- mac=%s: %s", kind, client or "?", mac, exc)
                return _json(start_response, "400 Bad Request", {"error": str(exc)})
            facts = dataclasses.replace(
                facts,
                token=facts.token or str(fields.get("token") or ""),
                named_revision=facts.named_revision or str(fields.get("revision") or ""),
            )
            decision = reports.decide_report(facts, self._secret)
        if not decision.accepted:
            return self._refuse(start_response, decision.refused, client, mac, decision.message)
        revision = decision.revision
        generation = self._holder.get(revision) or self._holder.current()
        node = _node_in(generation, mac) or nodes[0][1]
        detail = _detail(kind, fields, query)
        event = BootEvent(self._clock(), Stage(kind), revision, mac, node.name, client, detail)
        success = outcomes.report_verdict(event) is outcomes.Outcome.SUCCEEDED
        install = (node.name, mac, node.reinstall) if success else None
        try:
            self._recorder.record_durable(event, install)
        except Exception:
            log.exception("report not stored revision=%s mac=%s", revision, mac)
            return _json(start_response, "503 Service Unavailable", {"error": "could not store the report"})
        log.info("report %s from %s revision=%s mac=%s node=%s: %s", kind, client, revision, mac, node.name,
                 detail.get("status") or detail.get("result") or detail.get("event_type") or "-")
        return _json(start_response, "200 OK", {"recorded": True, "node": node.name, "revision": revision,
                                                 "stage": kind})

    def _refuse(self, start_response: StartResponse, reason: str, client: str, mac: str, message: str) -> list[bytes]:
        self.refused.labels(reason=reason).inc()
        log.warning("report refused (%s) from %s revision=- mac=%s: %s", reason, client or "?", mac, message)
        status = "404 Not Found" if reason in ("unknown-node", "bad-mac") else "403 Forbidden"
        return _json(start_response, status, {"error": message})

    def _stored_revisions(self) -> frozenset[str]:
        try:
            return frozenset(self._stored())
        except OSError as exc:
            log.warning("cannot list the generations on disk: %s", exc)
            return frozenset()

    def _generations(self) -> list[Generation]:
        current = self._holder.current()
        out = [current] if current is not None else []
        for revision in self._holder.retained():
            g = self._holder.get(revision)
            if g is not None and g is not current:
                out.append(g)
        return out

    def _leased_to(self, client: str, mac: str) -> str | None:
        if self._mac_for_address is None or not client:
            return None
        try:
            return self._mac_for_address(client)
        except Exception:
            log.exception("lease lookup failed revision=- mac=%s", mac)
            return None


def _node_in(generation: Generation | None, mac: str) -> Node | None:
    return None if generation is None else generation.state.node_by_mac(mac)


def _content_length(environ: Mapping[str, Any]) -> int | None:
    """The request's Content-Length (0 when absent), None when it is not a plain number."""
    text = str(environ.get("CONTENT_LENGTH") or "0").strip()
    return int(text) if text.isdigit() else None


def _read_body(environ: Mapping[str, Any], length: int) -> bytes | None:
    """At most MAX_REPORT_BYTES of the body; None when it is longer (a body without a length is
    read up to the bound and one byte more)."""
    stream = environ["wsgi.input"]
    body: bytes = stream.read(length) if length else stream.read(MAX_REPORT_BYTES + 1)
    return None if len(body) > MAX_REPORT_BYTES else body


_KEEP = {
    "report": ("status", "message"),
    "autoinstall": ("name", "event_type", "result", "description", "origin", "level", "timestamp"),
    "phone-home": ("instance_id", "hostname", "fqdn"),
}


def _detail(kind: str, fields: Mapping[str, Any], query: Mapping[str, str]) -> dict[str, Any]:
    """What is kept of a report: its known fields, then anything else (bounded), never the token."""
    detail: dict[str, Any] = {}
    for key in _KEEP[kind]:
        if key in fields:
            detail[key] = fields[key]
    if kind == "report" and "status" not in detail and "status" in query:
        detail["status"] = query["status"]
    if kind == "phone-home":
        detail["pub_keys"] = sorted(k for k in fields if k.startswith("pub_key_"))
    for key, value in fields.items():
        if key in detail or key == "token" or key.startswith("pub_key_") or len(detail) >= 32:
            continue
        detail[key] = value if isinstance(value, (int, float, bool)) or value is None else str(value)[:2000]
    return detail


class _Timelines:
    """Machines' boot events (DHCP left out: it decides no outcome) kept between requests, re-read
    per MAC when its newest event id changes; and the results of plan runs computed from them
    (`outcomes.commit_results`'s memo). The commit list over 10,000 nodes reads every machine's
    events once, then only those of machines that booted since."""

    MAX_MEMO = 200_000

    def __init__(self, store: ResultsStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._events: dict[str, list[BootEvent]] = {}
        self._plans: dict[tuple[str, str], str] = {}
        self._versions: dict[str, int] = {}
        self._seen = 0  # the newest event id read
        self._runs: dict[tuple[tuple[str, ...], int], list[outcomes.PlanSpan]] = {}
        self.memo: dict[tuple[str, str, float, int], outcomes.NodeResult] = {}

    def runs(self, revisions: Sequence[str]) -> list[outcomes.PlanSpan]:
        """The store's runs for a page of commits, kept until another revision is applied."""
        key = (tuple(revisions), self._store.change_stamp()[2])
        with self._lock:
            found = self._runs.get(key)
        if found is None:
            found = self._store.runs(revisions)
            with self._lock:
                if len(self._runs) > 64:
                    self._runs.clear()
                self._runs[key] = found
        return found

    def __call__(self, macs: set[str]) -> outcomes.Timelines:
        with self._lock:
            versions = self._store.mac_versions(self._seen)
            if versions:
                self._seen = max(self._seen, *versions.values())
            stale = [m for m, v in versions.items() if self._versions.get(m) != v]
            if stale:
                # By MAC, 500 at a time: the store's connection is free between the chunks for the
                # writer and for reports, which a single pass over every event would hold up.
                events, plans = self._store.events_with_plans(stale, boots_only=True)
                fresh: dict[str, list[BootEvent]] = {m: [] for m in stale}
                for e in events:
                    if e.mac in fresh:
                        fresh[e.mac].append(e)
                self._events.update(fresh)
                self._plans.update(plans)
                self._versions.update((m, versions[m]) for m in stale)
            if len(self.memo) > self.MAX_MEMO:
                self.memo.clear()
            return self._events, self._plans, self._versions


class _StoreView:
    """A read-only view of the results store: outcomes are evaluated at `clock()` with `timeout`."""

    _site: str | None = None  # `?site=`: one site's view of a store several sites share

    def __init__(self, store: ResultsStore, timeout: float, clock: Callable[[], float] = time.time,
                 status: Callable[[], Mapping[str, Any]] | None = None,
                 holder: GenerationHolder | None = None, timelines: _Timelines | None = None) -> None:
        self._store: ResultsQueries = store
        self._timeout = timeout
        self._clock = clock
        self._status = status
        self._holder = holder
        self._timelines = timelines or _Timelines(store)

    def _for_site(self, query: Mapping[str, str]) -> Self:
        """This view, or one site's (`?site=NAME`): its nodes, its machines' events, the commits
        it applied. Without `?site=` a store several sites share shows every site."""
        site = query.get("site") or None
        if site is None:
            return self
        view = copy.copy(self)
        view._store, view._site = self._store.for_site(site), site
        return view

    def _commits_page(self, now: float, limit: int, offset: int
                      ) -> tuple[list[outcomes.CommitInfo], dict[str, outcomes.CommitResult], int]:
        # the runs' cache holds every site's runs: one site's view reads its own
        runs = self._timelines.runs if self._site is None else self._store.runs
        return outcomes.commits_page(self._store, now=now, timeout=self._timeout, limit=limit, offset=offset,
                                     timelines=self._timelines, memo=self._timelines.memo, with_nodes=False,
                                     runs=runs)

    def _daemon_status(self) -> Mapping[str, Any]:
        if self._status is None:
            return {}
        try:
            status = dict(self._status())
        except Exception:  # the page shows the results even when the status cannot be read
            log.exception("status for the dashboard failed")
            return {}
        sites = self._store.sites()
        if len([s for s in sites if s]) > 1 or self._site is not None:  # the dashboard's site links
            status["ui_sites"], status["ui_site"] = sites, self._site
        return status

    def _stamp(self, now: float) -> str:
        """Changes when anything on the pages may: new rows, the daemon's condition, the clock (timeouts)."""
        status = self._daemon_status()
        servers = {k: v.get("state") for k, v in dict(status.get("servers") or {}).items()}
        text = json.dumps([self._store.change_stamp(), status.get("condition"), status.get("desired_revision"),
                           servers, int(now // 30)], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _unknown(self, now: float, serving: str | None) -> list[dict[str, Any]]:
        """Machines no served node declares, heard from in the last week, with the group they would match."""
        generation = self._holder.current() if self._holder is not None else None
        groups = select.sort_groups(generation.state.groups) if generation is not None else ()
        boots_unknown = generation is not None and generation.state.site.unknown_clients == "boot"
        out = []
        for mac, last, count, vendor, stage in self._store.unknown_machines(now - 7 * 86400, serving):
            group = select.select_group(groups, {"mac": mac}) if generation is not None else None
            if group is None:
                would = "none"
            elif group.selector or boots_unknown:
                would = group.id
            else:
                would = f"{group.id} (not served: unknown_clients: ignore)"
            out.append({"mac": mac, "last_seen": last, "events": count, "vendor_class": vendor,
                        "last_stage": stage, "group": would})
        return out


def _page_args(query: Mapping[str, str], default: int, most: int) -> tuple[int, int]:
    limit = max(1, min(int(query.get("limit", str(default))), most))
    return limit, max(0, int(query.get("offset", "0")))


class ResultsApi(_StoreView):
    """`/api/commits`, `/api/commits/<sha>`, `/api/nodes`, `/api/nodes/<name>`, `/api/unknown`,
    `/api/installs`, `/api/live`: JSON read from the store, paged where a list grows with the
    history. `/api/installs` (every reported install, a row per node and `reinstall` counter: what
    `diff --url` reads) is not: it grows with the fleet only."""

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _json(start_response, "405 Method Not Allowed", {"error": "GET only"})
        parts = [p for p in (environ.get("PATH_INFO") or "")[len("/api") :].split("/") if p]
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if query.get("site"):
            return self._for_site(query)._answer(parts, query, start_response)
        return self._answer(parts, query, start_response)

    def _answer(self, parts: list[str], query: Mapping[str, str], start_response: StartResponse) -> Iterable[bytes]:
        # No flush here: under a boot storm it would hold a worker; results lag by one batch (~0.1 s).
        now = self._clock()
        timeout = self._timeout
        try:
            if parts == ["live"]:
                return _json(start_response, "200 OK", {"stamp": self._stamp(now), "generated": now})
            if parts == ["commits"]:
                limit, offset = _page_args(query, 20, 500)
                infos, results, total = self._commits_page(now, limit, offset)
                serving = outcomes.serving_revision(self._store)
                commits = []
                for info in infos:
                    doc = outcomes.commit_doc(info, results.get(info.revision), serving, with_events=False)
                    doc.pop("nodes")
                    commits.append(doc)
                return _json(start_response, "200 OK", {
                    "desired_revision": outcomes.desired_revision(self._store), "last_applied_revision": serving,
                    "total": total, "limit": limit, "offset": offset, "commits": commits})
            if len(parts) == 2 and parts[0] == "commits":
                (info,), results, _ = outcomes.commits_page(self._store, now=now, timeout=timeout, commit=parts[1])
                serving = outcomes.serving_revision(self._store)
                doc = outcomes.commit_doc(info, results.get(info.revision), serving)
                reconcile = self._store.last_reconcile_of(info.revision)
                doc["reconcile"] = reconcile.as_dict() if reconcile is not None else None
                return _json(start_response, "200 OK", doc)
            if parts == ["nodes"]:
                limit, offset = _page_args(query, 100, 1000)
                nodes, total = outcomes.fleet(self._store, now=now, timeout=timeout, limit=limit, offset=offset)
                return _json(start_response, "200 OK", {"total": total, "limit": limit, "offset": offset,
                                                        "nodes": [n.as_dict() for n in nodes]})
            if len(parts) == 2 and parts[0] == "nodes":
                return _json(start_response, "200 OK", outcomes.node_report(self._store, parts[1], now=now,
                                                                            timeout=timeout))
            if parts == ["installs"]:
                return _json(start_response, "200 OK", {"installs": [
                    {"node": node, "mac": mac, "reinstall": reinstall, "revision": revision, "time": at}
                    for node, mac, reinstall, revision, at in self._store.installs()]})
            if parts == ["unknown"]:
                return _json(start_response, "200 OK", {
                    "machines": self._unknown(now, outcomes.serving_revision(self._store))})
        except ValueError:
            return _json(start_response, "400 Bad Request", {"error": "limit and offset must be numbers"})
        except LookupError as exc:  # UnknownCommit, unknown node
            return _json(start_response, "404 Not Found", {"error": str(exc.args[0] if exc.args else exc)})
        return _json(start_response, "404 Not Found", {
            "error": "expected /api/commits, /api/commits/<sha>, /api/nodes, /api/nodes/<name>, /api/unknown, "
                     "/api/installs or /api/live"})


class DashboardApp(_StoreView):
    """`/ui/` (header, commits, unknown machines), `/ui/fleet`, `/ui/commits/<sha>`, `/ui/nodes/<name>`."""

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _respond(start_response, "405 Method Not Allowed", b"GET only\n", "text/plain; charset=utf-8")
        path = environ.get("PATH_INFO") or "/ui/"
        parts = [p for p in path[len("/ui") :].split("/") if p]
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if query.get("site"):
            return self._for_site(query)._page(path, parts, query, start_response)
        return self._page(path, parts, query, start_response)

    def _page(self, path: str, parts: list[str], query: Mapping[str, str],
              start_response: StartResponse) -> Iterable[bytes]:
        # No flush here: under a boot storm it would hold a worker; results lag by one batch (~0.1 s).
        now = self._clock()
        timeout = self._timeout
        html = "text/html; charset=utf-8"
        if path == "/ui":
            start_response("308 Permanent Redirect", [("Location", "/ui/"), ("Content-Length", "0")])
            return [b""]
        try:
            page = max(1, int(query.get("page", "1")))
        except ValueError:
            page = 1
        status = self._daemon_status()
        stamp = self._stamp(now)
        try:
            if not parts:
                infos, results, total = self._commits_page(now, COMMITS_PER_PAGE, (page - 1) * COMMITS_PER_PAGE)
                serving = outcomes.serving_revision(self._store)
                body = http_dashboard.render_overview(
                    status, infos, results, serving, self._unknown(now, serving),
                    http_dashboard.Paging(page, COMMITS_PER_PAGE, total, self._site), now, timeout, stamp)
                return _respond(start_response, "200 OK", body, html)
            if parts == ["fleet"]:
                nodes, total = outcomes.fleet(self._store, now=now, timeout=timeout, limit=NODES_PER_PAGE,
                                              offset=(page - 1) * NODES_PER_PAGE)
                paging = http_dashboard.Paging(page, NODES_PER_PAGE, total, self._site)
                body = http_dashboard.render_fleet(status, nodes, paging, now, stamp)
                return _respond(start_response, "200 OK", body, html)
            if len(parts) == 2 and parts[0] == "commits":
                (info,), results, _ = outcomes.commits_page(self._store, now=now, timeout=timeout, commit=parts[1])
                serving = outcomes.serving_revision(self._store)
                body = http_dashboard.render_commit(status, info, results.get(info.revision), serving, now, stamp)
                return _respond(start_response, "200 OK", body, html)
            if len(parts) == 2 and parts[0] == "nodes":
                history = outcomes.node_history(self._store, parts[1], now=now, timeout=timeout)
                if history is None:
                    raise LookupError(f"no node {parts[1]!r} in any applied revision")
                body = http_dashboard.render_node(status, parts[1], *history, now, stamp)
                return _respond(start_response, "200 OK", body, html)
        except LookupError as exc:
            message = str(exc.args[0] if exc.args else exc)
            return _respond(start_response, "404 Not Found", http_dashboard.render_missing(message), html)
        return _respond(start_response, "404 Not Found", http_dashboard.render_missing(f"no page {path}"), html)


class DroppedEvents(Collector):
    """`netboot_boot_events_dropped_total`: boot events the results store let go because its
    queue was full (the disk fell behind a storm); read from the store when scraped."""

    def __init__(self, store: ResultsStore) -> None:
        self._store = store

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "netboot_boot_events_dropped", "Boot events not stored: the results store's queue was full",
            value=self._store.dropped,
        )


def make_results_apps(
    *,
    holder: GenerationHolder,
    recorder: ResultsRecorder,
    registry: CollectorRegistry,
    secret: bytes | None,
    boot_timeout: float = outcomes.DEFAULT_BOOT_TIMEOUT,
    mac_for_address: Callable[[str], str | None] | None = None,
    clock: Callable[[], float] = time.time,
    status: Callable[[], Mapping[str, Any]] | None = None,
    unstorable: Callable[[], str | None] = lambda: None,
    stored: Callable[[], Collection[str]] = lambda: (),
) -> dict[str, WsgiApp]:
    """The apps by the path prefix they are mounted at (`extra` of `make_boot_app`)."""
    store = recorder.store
    registry.register(OutcomeCounter(store, boot_timeout, clock))
    registry.register(DroppedEvents(store))
    timelines = _Timelines(store)
    return {
        "/report": ReportApp(holder, recorder, secret, registry, mac_for_address, clock, unstorable, stored),
        "/api": ResultsApi(store, boot_timeout, clock, status, holder, timelines),
        "/ui": DashboardApp(store, boot_timeout, clock, status, holder, timelines),
    }
