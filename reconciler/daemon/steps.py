"""The reconcile steps and their runner: one attempt in, one `Outcome` out.

Called by `Daemon.reconcile_once` (daemon.loop). A reconcile is an ordered list of steps with
one signature, `step(attempt) -> bool` (False: nothing more to do, e.g. the revision is already
applied), as source-controller does it:

    fetch -> verify -> snapshot -> validate -> render -> peer-check -> assets -> activate -> persist

With `Settings.persist_after_serving` (the `run` command's default) a commit is served first and
written after: `persist` hands the generation to a writer thread (daemon.persist) that writes
`generations/<sha>/`, swaps `current` and collects old generations, so `current` follows the
served generation shortly after (a crash in between leaves the previous `current`; the restart
serves it and reconciles the head again). A state directory known to refuse writes (the
daemon's probe) stops a commit before `activate`. Without it (tests driving the daemon in
process) the order is the one before: ... -> assets -> write -> swap-current -> activate.

Failures are the exceptions of `core.errors`, raised where they happen (the source, the
renderer, the artifact store, the peer check here) and turned into the outcome by the runner
alone: `Temporary` -> FAILED with its reason and delay, `InvalidRevision` -> REJECTED with its
findings; any other exception is a bug, FAILED (RetryingAfterError) and logged with its trace.
`assets` (with --assets-dir) fetches and verifies what assets.yaml lists into the content store
(`adapters.assetsync`) and links the revision's tree, before anything is activated: no machine is
told to fetch a kernel that is not there. Bytes that do not verify make the revision invalid (a
finding at the entry's line); a download that cannot be made now is `AssetsUnavailable`, retried.
With --no-fetch nothing is fetched and a missing asset is a warning naming the path.
With `Settings.worker` (the `run` command's default) `validate` validates and renders in a
long-lived child process (daemon.resident, which sends only what changed since its last result)
and `render` has nothing left to do. With `Settings.reuse_renders` (also `run`'s default) a node
whose inputs did not change is not rendered again (core.render.reuse; the memo lives in the
worker's memory, kept in the state directory's `render-memo` across restarts, or in this
process without the worker); `--verify-incremental` renders from scratch as well and serves
that when they differ, and checks the worker's patched result against its whole one.
Any failure before `activate` leaves the served generation untouched; `write` goes through
`generations/<sha>.tmp` and a rename, so a crash at any point leaves a complete generation or none.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from reconciler.adapters import assetsync
from reconciler.adapters.artifacts import ArtifactStore, StoredGeneration
from reconciler.adapters.assetstore import AssetStore
from reconciler.adapters.commitsig import load_signers
from reconciler.adapters.gitsource import Source, open_source, print_progress
from reconciler.core import codes, securecheck
from reconciler.core.assets import rel
from reconciler.core.errors import AssetsUnavailable, InvalidRevision, Reason, StoreUnwritable, Temporary
from reconciler.core.model import DesiredState, Issue, Node, Severity
from reconciler.core.render.files import RenderedFiles
from reconciler.core.render.reuse import NodeMemo
from reconciler.core.secrets import private_paths
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import validate
from reconciler.daemon import persist, resident, worker
from reconciler.daemon.loader import REPORT_KEY_META, SITE_META, Renderer
from reconciler.daemon.outcome import Outcome, Result
from reconciler.daemon.targets import Change, Stamps, stamps_of
from reconciler.generation import Generation, GenerationHolder
from reconciler.settings import Settings

log = logging.getLogger(__name__)

RENDER_MEMO = "render-memo"  # in the state directory: the worker's memo of rendered nodes


@dataclass
class Attempt:
    """What one reconcile knows so far; each step reads what earlier ones left."""

    trigger: str
    skip: Collection[str]  # revisions not to try again (the applied one, the rejected one)
    started: float
    step: str = ""
    revision: str | None = None
    snapshot: Snapshot | None = None
    state: DesiredState | None = None
    issues: tuple[Issue, ...] = ()
    files: Mapping[str, bytes] | None = None
    root: Path | None = None
    generation: Generation | None = None
    asset_paths: Mapping[str, str] | None = None  # served path -> sha256 of what the assets step linked
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds, in order
    # What a step holds until the attempt ends (closed by `Reconciler.run`): the writer's giving way.
    held: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)


Step = Callable[[Attempt], bool]


class Reconciler:
    """The steps over one source, one artifact store and one holder."""

    def __init__(
        self,
        settings: Settings,
        *,
        renderer: Renderer,
        artifacts: ArtifactStore,
        holder: GenerationHolder,
        meta: Mapping[str, bytes],
        source: Source | None = None,
        on_source_opened: Callable[[], None] = lambda: None,
        on_desired: Callable[[str], None] = lambda revision: None,
        on_assets: Callable[[Mapping[str, Any] | None], None] = lambda progress: None,
        unwritable: Callable[[], str | None] = lambda: None,
        on_persisted: Callable[[str], None] = lambda revision: None,
    ) -> None:
        self.settings = settings
        self.renderer = renderer
        self.artifacts = artifacts
        self.holder = holder
        self.meta = meta  # the `.meta/` of what we write
        self.source = source
        self.on_source_opened = on_source_opened
        self.previous: StoredGeneration | None = None  # what `write` may hard-link from
        # The last worker result's files and what they changed against the one before (daemon.targets).
        self.change: tuple[Mapping[str, bytes], Change] | None = None
        # The last worker result's files and the wait for its plan digests, when the worker makes them.
        self._plans: tuple[Mapping[str, bytes], Callable[[], tuple[Stamps, list[str | None]] | None]] | None = None
        self.on_desired = on_desired  # the fetch step learnt which revision is desired
        self.on_assets = on_assets  # progress of the assets step (None: over)
        self.asset_store = AssetStore(settings.assets_dir) if settings.assets_dir is not None else None
        self.unwritable = unwritable  # why the state directory refuses writes now (the daemon's probe)
        self.on_persisted = on_persisted  # on the writer thread, after `current` names a revision
        # Nodes rendered at earlier commits (core.render.reuse): in the worker's memory, else here.
        self.memo = NodeMemo() if settings.reuse_renders and not settings.worker else None
        self.worker = resident.Worker(renderer, site=settings.site, memo=settings.state_dir / RENDER_MEMO,
                                      reuse=settings.reuse_renders, verify=settings.verify_incremental) \
            if settings.worker else None
        self.persister = persist.Persister(self._persist) if settings.persist_after_serving else None
        self._peer_accepted: tuple[object, ...] | None = None  # `_peer_key` of the last dhcpd.conf dhcpd -t accepted
        self._peer_entry: tuple[object, str] | None = None  # that config as stored (`_stored_conf`)
        self._early: _DhcpdCheck | None = None  # `dhcpd -t` started on the config the worker sent ahead
        if self.worker is not None:
            self.worker.on_peer = self._peer_early
        head: tuple[tuple[str, Step], ...] = (
            ("fetch", self._fetch),
            ("verify", self._verify),
            ("snapshot", self._snapshot),
            ("validate", self._validate),
            ("render", self._render),
            ("peer-check", self._peer_check),
            ("assets", self._assets),
        )
        if self.persister is not None:
            self.steps = (*head, ("activate", self._activate), ("persist", self._hand_over))
        else:
            self.steps = (*head, ("write", self._write), ("swap-current", self._swap_current),
                          ("activate", self._activate))

    def close(self, timeout: float) -> None:
        """Write what is served but not on disk yet (within `timeout`), stop the worker process."""
        if self.persister is not None:
            self.persister.stop(timeout)
        if self.worker is not None:
            self.worker.close()
        self._drop_early()

    def open_source(self) -> None:
        self.source = open_source(self.settings, print_progress if self.settings.progress else None)
        log.info("source %s", self.source.description)

    def run(self, trigger: str, started: float, skip: Collection[str] = ()) -> Outcome:
        """One attempt through the steps; never raises (a bug is a FAILED outcome)."""
        attempt = Attempt(trigger, skip, started)
        t0 = time.monotonic()
        result, message, reason, delay = Result.APPLIED, "", "", None
        try:
            for name, step in self.steps:
                attempt.step = name
                t_step = time.monotonic()
                done = step(attempt)
                attempt.timings[name] = time.monotonic() - t_step
                if not done:
                    result = Result.UNCHANGED
                    break
        except InvalidRevision as exc:
            result, message = Result.REJECTED, str(exc)
            attempt.issues = exc.findings or attempt.issues
        except Temporary as exc:
            result, message, reason, delay = Result.FAILED, f"{attempt.step}: {exc}", exc.reason, exc.delay
        except OSError as exc:
            result, message, reason = Result.FAILED, f"{attempt.step}: {exc}", Reason.RETRYING_AFTER_ERROR
        except Exception as exc:  # a bug must not stop the daemon serving the last good generation
            log.exception("revision=%s reconcile step %s failed", attempt.revision, attempt.step)
            result, message = Result.FAILED, f"{attempt.step}: internal error: {exc!r}"
            reason = Reason.RETRYING_AFTER_ERROR
        finally:
            attempt.held.close()
        return Outcome(
            result=result,
            trigger=trigger,
            started=started,
            duration=time.monotonic() - t0,
            revision=attempt.revision,
            step=attempt.step,
            message=message,
            reason=reason,
            delay=delay,
            findings=attempt.issues,
            timings=MappingProxyType(dict(attempt.timings)),
            generation=attempt.generation,
            commit=MappingProxyType(dict(attempt.snapshot.extra) if attempt.snapshot is not None else {}),
        )

    # -- the steps ----------------------------------------------------------------------------

    def _fetch(self, attempt: Attempt) -> bool:
        if self.source is None:  # it could not be opened at start
            self.open_source()
            self.on_source_opened()
        assert self.source is not None
        revision = self.source.fetch()
        attempt.revision = revision
        self.on_desired(revision)
        if revision in attempt.skip:
            self._assets_of_current(attempt)
            return False
        return True

    def _assets_of_current(self, attempt: Attempt) -> None:
        """The served revision's assets, when it was activated without them: a daemon started with
        --assets-dir for the first time on a state directory it served without one."""
        current = self.holder.current()
        store = self.asset_store
        if store is None or current is None or current.revision != attempt.revision or not current.state.assets:
            return
        if store.generation_root(current.revision).is_dir():
            return
        attempt.state = current.state
        self._assets(attempt)
        if attempt.asset_paths:
            store.publish(attempt.asset_paths)

    def _verify(self, attempt: Attempt) -> bool:
        """With --verify-commits, the commit must be signed by a key the file lists (InvalidRevision)."""
        if self.settings.verify_commits is None:
            return True
        assert self.source is not None and attempt.revision is not None
        try:
            signers = load_signers(self.settings.verify_commits)  # read again: a key added needs no restart
        except ValueError as exc:
            raise Temporary(str(exc)) from exc
        signer = self.source.verify(attempt.revision, signers)
        log.info("revision=%s signed by %s (%s)", attempt.revision, signer, self.settings.verify_commits)
        return True

    def _snapshot(self, attempt: Attempt) -> bool:
        assert self.source is not None and attempt.revision is not None
        if self.persister is not None:  # a new revision: the last one's write waits until it is served
            attempt.held.enter_context(self.persister.giving_way())
        attempt.snapshot = self.source.snapshot(attempt.revision)
        return True

    def _validate(self, attempt: Attempt) -> bool:
        assert attempt.snapshot is not None
        if self.worker is not None:  # validation and rendering both, in the worker process
            built = self.worker.build(attempt.snapshot)
            attempt.issues, attempt.state, attempt.files = built.issues, built.state, built.files
            self.change = None if built.change is None else (built.files, built.change)
            self._plans = None if built.plans is None else (built.files, built.plans)
            attempt.timings.update((f"worker.{name}", seconds) for name, seconds in built.timings.items())
            self._mismatched(attempt, built.mismatched)
            if built.patch_mismatched:
                log.error("revision=%s INCREMENTAL PATCH MISMATCH: the generation patched from the worker's changes "
                          "differs from its whole result in %d place(s) (serving the whole result; please report "
                          "this): %s", attempt.revision, len(built.patch_mismatched),
                          ", ".join(built.patch_mismatched[:10]))
            return True
        result = validate(attempt.snapshot)
        attempt.issues = result.issues
        attempt.state = result.for_site(self.settings.site)  # InvalidRevision: invalid, or no such site
        return True

    def plans(self, state: DesiredState, files: Mapping[str, bytes]) -> list[str | None] | None:
        """The worker's plan digests of `state`'s nodes in `files` (daemon.targets) when it made them
        for exactly these (the last result's files, at their revision, stand-in and secret);
        waits for them. None: none (the daemon computes them)."""
        plans, self._plans = self._plans, None
        if plans is None or plans[0] is not files:
            return None
        got = plans[1]()
        if got is None or got[0] != stamps_of(state, files):
            return None
        return got[1]

    def _render(self, attempt: Attempt) -> bool:
        assert attempt.state is not None
        if attempt.files is not None:
            return True  # rendered by the worker
        # A template failing here (validation renders each template once, not every pass the
        # renderer makes) raises TemplateFailure, an InvalidRevision: not an error to retry.
        attempt.files, mismatched = worker.render_reusing(self.renderer, attempt.state, self.memo,
                                                          self.settings.verify_incremental)
        if isinstance(attempt.files, RenderedFiles):  # or it keeps the last generation's entries until the next
            attempt.files.forget_since()
        self._mismatched(attempt, mismatched)
        return True

    def _mismatched(self, attempt: Attempt, paths: Sequence[str]) -> None:
        """--verify-incremental found the memo's rendering wrong: said loudly; the files rendered
        from scratch are what is served."""
        if paths:
            log.error("revision=%s INCREMENTAL RENDER MISMATCH: %d file(s) rendered with the memo differ from a "
                      "render from scratch (serving the render from scratch; please report this): %s",
                      attempt.revision, len(paths), ", ".join(paths[:10]))

    def _peer_check(self, attempt: Attempt) -> bool:
        """`dhcpd -t -cf` on the rendered dhcpd.conf, when ISC dhcpd is installed; the Secure Boot
        chain's binaries on this machine (a warning each that is missing). Not run again for a
        dhcpd.conf the same dhcpd accepted last time (`_peer_key`; with --verify-incremental it
        is, and a refusal is said to be a mismatch)."""
        assert attempt.files is not None
        if attempt.state is not None:
            missing = securecheck.missing_binaries(attempt.state, os.path.isfile)
            attempt.issues = (*attempt.issues, *missing)
            for w in missing:
                log.warning("revision=%s %s: %s %s", attempt.revision, w.file, w.code, w.message)
        files = attempt.files
        dhcpd = _find_dhcpd()
        if "dhcpd.conf" not in files or dhcpd is None:
            return True
        entry = _stored_conf(files)
        if entry is not None and entry == self._peer_entry and not self.settings.verify_incremental \
                and self._peer_accepted is not None and _binary(dhcpd) == self._peer_accepted[:5]:
            return True  # the stored config dhcpd accepted, stamped where its header is (`_stored_conf`)
        conf = files["dhcpd.conf"]
        key = _peer_key(dhcpd, conf)
        known = key is not None and key == self._peer_accepted
        early, self._early = self._early, None
        if known and not self.settings.verify_incremental:
            self._peer_entry = entry if key is not None else None
            if early is not None:
                early.cancel()
            return True
        if early is None or not early.same(dhcpd, conf):
            if early is not None:
                early.cancel()
            early = _DhcpdCheck(dhcpd, conf)
        returncode, stdout, stderr = early.result(timeout=30)
        if returncode != 0:
            output = (stderr or stdout).decode(errors="replace")
            lines = [ln for ln in output.splitlines() if ln.strip() and not ln.startswith(("Internet Systems",
                     "Copyright", "For info", "ldap-", "Config file"))]
            message = "rendered dhcpd.conf rejected by dhcpd -t: " + " / ".join(lines[-5:])
            if known:
                log.error("revision=%s INCREMENTAL PEER-CHECK MISMATCH: dhcpd -t refuses a dhcpd.conf that differs "
                          "from the one it accepted last only by its first line, a comment (please report this)",
                          attempt.revision)
            raise InvalidRevision(message, (Issue("dhcpd.conf", 0, 0, "peer-check", Severity.ERROR, message),))
        self._peer_accepted = key
        self._peer_entry = entry if key is not None else None
        return True

    def _drop_early(self) -> None:
        """Stop the `dhcpd -t` started ahead, if any (its temporary files go with it)."""
        if self._early is not None:
            self._early.cancel()
            self._early = None

    def _peer_early(self, conf: bytes) -> None:
        """The worker's dhcpd.conf of the result it is sending (a whole one): `dhcpd -t` starts on
        it now, beside the rest of the result crossing the pipe; `_peer_check` takes its verdict
        when the served dhcpd.conf is these bytes (at 100,000 nodes ~0.8 s off the commit's path)."""
        self._drop_early()
        dhcpd = _find_dhcpd()
        if dhcpd is None:
            return
        key = _peer_key(dhcpd, conf)
        if key is not None and key == self._peer_accepted and not self.settings.verify_incremental:
            return  # accepted already: `_peer_check` will not run it
        try:
            self._early = _DhcpdCheck(dhcpd, conf)
        except OSError as exc:  # `_peer_check` runs it then, and meets the error where it always did
            log.debug("dhcpd -t could not be started ahead: %s", exc)

    def _assets(self, attempt: Attempt) -> bool:
        store, state = self.asset_store, attempt.state
        assert state is not None and attempt.revision is not None
        if store is None or not state.assets:
            return True
        if not self.settings.fetch_assets:
            states = assetsync.status(state.assets, store)
            by_path = {a.path: a for a in state.assets}
            warnings = tuple(
                codes.issue("asset-missing", by_path[s.path].source,
                            f"{s.path}: {s.state} under --assets-dir ({s.detail}); --no-fetch: place it by hand")
                for s in states if not s.ok)
            attempt.issues = (*attempt.issues, *warnings)
            for w in warnings:
                log.warning("revision=%s %s:%d: %s %s", attempt.revision, w.file, w.line, w.code, w.message)
            paths = {rel(s.path): s.sha256 for s in states
                     if s.state == "verified" and s.sha256 is not None and by_path[s.path].managed}
            with store.locked():
                store.link_generation(attempt.revision, paths)
        else:
            progress = _Progress(attempt.revision, [a.path for a in state.assets if a.managed], self.on_assets)
            self.on_assets(progress.view())
            try:
                result = assetsync.sync(state.assets, store, assetsync.Options(timeout=self.settings.asset_timeout),
                                        progress, publish=False, generation=attempt.revision)
            finally:
                self.on_assets(None)
            by_path = {a.path: a for a in state.assets}
            invalid = tuple(codes.issue("asset-verification-failed", by_path[s.path].source, s.detail)
                            for s in result.failures if s.invalid)
            if invalid:
                attempt.issues = (*attempt.issues, *invalid)
                raise InvalidRevision(f"{len(invalid)} asset(s) do not verify: {invalid[0].message}", attempt.issues)
            if result.failures:
                first = result.failures[0]
                raise AssetsUnavailable(f"{len(result.failures)} asset(s) not fetched yet: {first.detail}")
            paths = dict(result.paths)
        attempt.asset_paths = paths
        return True

    def _write(self, attempt: Attempt) -> bool:
        assert attempt.files is not None and attempt.snapshot is not None and attempt.revision is not None
        parts: dict[str, float] = {}
        # A revision written before (a revert to it) with another report secret, or for another
        # --site, is written again.
        stale = any((self.artifacts.meta(attempt.revision, key) or b"") != self.meta.get(key, b"")
                    for key in (REPORT_KEY_META, SITE_META))
        private = private_paths(attempt.state) if attempt.state is not None else ()  # 0600: they hold secrets
        attempt.root = self.artifacts.write(attempt.revision, attempt.files, attempt.snapshot.files,
                                            previous=self.previous, timings=parts, meta=self.meta, replace=stale,
                                            private=private)
        attempt.timings.update((f"write.{name}", seconds) for name, seconds in parts.items())
        return True

    def _swap_current(self, attempt: Attempt) -> bool:
        assert attempt.revision is not None
        self.artifacts.swap_current(attempt.revision)
        return True

    def _activate(self, attempt: Attempt) -> bool:
        assert attempt.revision is not None and attempt.state is not None and attempt.files is not None
        problem = self.unwritable() if self.persister is not None else None
        if problem is not None:  # it could not be written: not served either (a restart could not serve it)
            raise StoreUnwritable(f"the state directory refuses writes ({problem}): not served until it takes them")
        generation = Generation(attempt.revision, attempt.state, attempt.files, attempt.root)
        self.holder.swap(generation, self._changed_nodes(attempt.files))
        attempt.generation = generation
        if self.asset_store is not None and attempt.asset_paths:
            try:  # the served paths, for tools reading --assets-dir (the HTTP server reads the tree)
                self.asset_store.publish(attempt.asset_paths)
            except OSError as exc:
                log.warning("revision=%s linking the served asset paths: %s", attempt.revision, exc)
        if attempt.root is not None and attempt.snapshot is not None:
            self.previous = StoredGeneration(attempt.revision, attempt.root, attempt.files, attempt.snapshot.files,
                                             self.meta)
            self._share(attempt.files, self._patched_from(attempt.files))  # written (`_write`) before this step
        return True

    def _changed_nodes(self, files: Mapping[str, bytes]) -> list[tuple[Node, Node]] | None:
        """The worker's changed nodes, (before, after), when `files` are its last result, that result
        was patched onto the one served now, kept the node order and changed no node's name."""
        change = self.change
        current = self.holder.current()
        if change is None or change[0] is not files or current is None or change[1].base is not current.files \
                or not change[1].order_kept or change[1].nodes.keys() != change[1].was.keys():
            return None
        return [(change[1].was[name], node) for name, node in change[1].nodes.items()]

    def _hand_over(self, attempt: Attempt) -> bool:
        """The served generation to the writer thread (`_persist`); `current` follows it."""
        assert self.persister is not None and attempt.revision is not None and attempt.files is not None
        assert attempt.snapshot is not None
        # The activated generation's boot index holds them (patched from the last one's: Generation.warm).
        private = attempt.generation.boot_index.private if attempt.generation is not None else \
            frozenset(private_paths(attempt.state)) if attempt.state is not None else frozenset()
        self.persister.submit(persist.Job(attempt.revision, attempt.files, attempt.snapshot.files, private,
                                          time.monotonic(), self._patched_from(attempt.files)))
        return True

    def _patched_from(self, files: Mapping[str, bytes]) -> tuple[Mapping[str, bytes], Collection[str]] | None:
        """The files the worker patched `files` from and the paths where they differ, when it did."""
        change = self.change
        return (change[1].base, change[1].paths) if change is not None and change[0] is files else None

    def _share(self, files: Mapping[str, bytes], patched_from: tuple[Mapping[str, bytes], Collection[str]] | None,
               ) -> None:
        """Once `files` are written (no longer the `previous` a write hard-links from), the
        generations retained in memory that hold the entries they were patched from hold
        those as theirs and the differences (`GenerationHolder.share`)."""
        if patched_from is not None:
            self.holder.share(patched_from[0], files, patched_from[1])

    def _persist(self, job: persist.Job) -> None:
        """On the writer thread: the generation durably on disk, then `current` names it."""
        t0 = time.monotonic()
        parts: dict[str, float] = {}
        stale = any((self.artifacts.meta(job.revision, key) or b"") != self.meta.get(key, b"")
                    for key in (REPORT_KEY_META, SITE_META))
        root = self.artifacts.write(job.revision, job.files, job.source, previous=self.previous, timings=parts,
                                    meta=self.meta, replace=stale, private=job.private,
                                    pace=self.persister.pace if self.persister is not None else None)
        t1 = time.monotonic()
        self.artifacts.swap_current(job.revision)
        self.previous = StoredGeneration(job.revision, root, job.files, job.source, self.meta)
        self._share(job.files, job.patched_from)
        done = time.monotonic()
        steps = " ".join(f"write.{name}={seconds:.3f}" for name, seconds in parts.items())
        log.info("revision=%s persisted %.3fs after it was served (persist %.3fs: %s swap-current=%.3f)",
                 job.revision, done - job.served_at, done - t0, steps, done - t1)
        self.on_persisted(job.revision)


class _DhcpdCheck:
    """`dhcpd -t -cf` on `conf`, started now; its verdict when asked for (`result`)."""

    def __init__(self, dhcpd: str, conf: bytes) -> None:
        self.dhcpd, self.conf = dhcpd, conf
        self._cf = tempfile.NamedTemporaryFile(prefix="dhcpd-", suffix=".conf")  # noqa: SIM115 (closed by `_done`)
        # Its output to files, not pipes: read once it has exited, with no reader meanwhile.
        self._out = tempfile.TemporaryFile()  # noqa: SIM115
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self._cf.write(conf)
            self._cf.flush()
            self._proc = subprocess.Popen([dhcpd, "-t", "-cf", self._cf.name], stdin=subprocess.DEVNULL,
                                          stdout=self._out, stderr=self._err)
        except BaseException:
            self._done()
            raise
        self._started = time.monotonic()

    def same(self, dhcpd: str, conf: bytes) -> bool:
        return dhcpd == self.dhcpd and conf == self.conf

    def result(self, timeout: float) -> tuple[int, bytes, bytes]:
        """(exit status, stdout, stderr); subprocess.TimeoutExpired past `timeout` s from its start."""
        try:
            returncode = self._proc.wait(max(0.0, timeout - (time.monotonic() - self._started)))
        except subprocess.TimeoutExpired:
            self.cancel()
            raise
        try:
            self._out.seek(0)
            self._err.seek(0)
            return returncode, self._out.read(), self._err.read()
        finally:
            self._done()

    def cancel(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._done()

    def _done(self) -> None:
        for fh in (self._cf, self._out, self._err):
            fh.close()


def _stored_conf(files: Mapping[str, bytes]) -> tuple[object, str] | None:
    """dhcpd.conf as the render memo stores it and the stand-in it is stamped at, when the stand-in
    is in its first line only (the header comment): the same stored object then serves a config
    that differs from the last one only there (issue 25: no 8 MB config stamped, split and
    compared per commit at 100,000 nodes). None: not stored so."""
    if not isinstance(files, RenderedFiles):
        return None
    entry = files.raw("dhcpd.conf")
    if isinstance(entry, bytes):
        return None
    raw, _, token = entry
    stand_in = files.sentinel.encode()
    if token or not stand_in or raw.find(stand_in, raw.find(b"\n") + 1 if raw.startswith(b"#") else 0) != -1:
        return None
    return entry, files.sentinel


def _binary(dhcpd: str) -> tuple[object, ...] | None:
    """The part of `_peer_key` that names the dhcpd binary (None: it cannot be stat'ed)."""
    try:
        st = os.stat(dhcpd)
    except OSError:
        return None
    return (dhcpd, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _find_dhcpd() -> str | None:
    """ISC dhcpd on PATH, or in the sbin directories a non-root PATH leaves out."""
    return shutil.which("dhcpd") or shutil.which("dhcpd", path="/usr/sbin:/sbin")


def _peer_key(dhcpd: str, conf: bytes) -> tuple[object, ...] | None:
    """What `dhcpd -t`'s verdict on `conf` depends on: the dhcpd binary (path, inode, size,
    mtime: an upgrade checks again) and the config but for a first line that is a comment (the
    renderer's header, naming the revision: dhcpd skips it, `#` to the end of the line), by its
    SHA-256 (kept until the next config is checked: at 100,000 nodes the rest was a 12 MB copy,
    ~7 ms to hash). None: not to be skipped (the binary cannot be stat'ed, or the config
    includes another file, whose contents may change under the same bytes)."""
    binary = _binary(dhcpd)
    if binary is None:
        return None
    start = conf.find(b"\n") + 1 if conf.startswith(b"#") else 0
    body = memoryview(conf)[start:] if start else memoryview(conf)
    with body:
        if conf.find(b"include", start) != -1:
            return None
        return (*binary, len(body), hashlib.sha256(body).digest())


class _Progress:
    """The assets step's progress, for `/status` (a `assetsync.Reporter`; called from its workers)."""

    def __init__(self, revision: str, paths: Sequence[str],
                 publish: Callable[[Mapping[str, Any] | None], None]) -> None:
        self.revision, self.paths, self.publish = revision, list(paths), publish
        self.bytes: dict[str, tuple[int, int | None]] = {}
        self.states: dict[str, str] = {}
        self._lock = threading.Lock()

    def view(self) -> dict[str, Any]:
        with self._lock:
            done = sum(1 for s in self.states.values() if s == "verified")
            failed = sum(1 for s in self.states.values() if s not in ("verified", "present"))
            return {
                "revision": self.revision,
                "assets": len(self.paths),
                "verified": done,
                "failed": failed,
                "fetching": {p: {"bytes": b, "total": t} for p, (b, t) in self.bytes.items() if p not in self.states},
            }

    def begin(self, path: str, what: str) -> None:
        with self._lock:
            self.bytes[path] = (0, None)
        self.publish(self.view())

    def advance(self, path: str, done: int, total: int | None) -> None:
        with self._lock:
            self.bytes[path] = (done, total)
        self.publish(self.view())

    def end(self, state: assetsync.AssetState) -> None:
        with self._lock:
            self.states[state.path] = state.state
        self.publish(self.view())
