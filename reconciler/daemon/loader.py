"""Generations from disk: `current` at start-up, and any stored revision for the holder's loader.

Called by `Daemon.open` (`load_current`, before anything serves) and by `GenerationHolder.get`
on a request thread (`load`: a `/r/<sha>/` URL naming a generation this process has not
loaded, e.g. after a restart). A stored generation keeps the repository files it was rendered
from (`.source/`), validated again here; its files are served as stored unless they were signed
with another report secret (`.meta/report-key`): then they are rendered again, and `current`
is also written again (before anything serves, so no stale token is handed out).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from reconciler.adapters.artifacts import ArtifactStore, StoredGeneration
from reconciler.core.errors import InvalidRevision, Temporary
from reconciler.core.model import DesiredState
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import validate
from reconciler.daemon import worker
from reconciler.generation import Generation

log = logging.getLogger(__name__)

Renderer = Callable[[DesiredState], Mapping[str, bytes]]
REPORT_KEY_META = "report-key"  # `.meta/report-key` of a generation: the fingerprint of its report secret
SITE_META = "site"  # `.meta/site`: the site (--site) it was rendered for; absent or empty: a repository without sites


def report_key(secret: bytes | None) -> bytes:
    """A fingerprint of the report secret (not the secret): which one a generation's tokens are signed with."""
    if not secret:
        return b"none\n"
    return hashlib.sha256(b"netboot-reconcile report-secret fingerprint\0" + secret).hexdigest()[:32].encode() + b"\n"


@dataclass(frozen=True)
class Loaded:
    stored: StoredGeneration
    generation: Generation


class GenerationLoader:
    def __init__(self, artifacts: ArtifactStore, renderer: Renderer, meta: Mapping[str, bytes], *,
                 in_worker: bool = False, site: str | None = None) -> None:
        self.artifacts = artifacts
        self.site = site  # --site: the site whose state a stored generation is validated into
        self.renderer = renderer
        self.meta = meta  # the `.meta/` this daemon writes (its report-key)
        self.in_worker = in_worker  # validate in a child process (daemon.worker): this runs on request threads too

    def load_current(self) -> Loaded | None:
        """`current` from disk, rendered (and written) again when its report secret is not ours."""
        try:
            stored = self.artifacts.load_current()
        except OSError as exc:
            log.error("cannot read the current generation: %s", exc)
            return None
        if stored is None:
            return None
        built = self.rebuild(stored)
        if built is None:
            return None
        generation, rerendered = built
        if rerendered:
            meta = dict(self.meta)
            try:
                root = self.artifacts.write(stored.revision, generation.files, stored.source, previous=stored,
                                            meta=meta, replace=True)
            except Temporary as exc:  # serve the new rendering anyway; the next start tries again
                log.error("revision=%s could not write the generation rendered again: %s", stored.revision, exc)
            else:
                stored = StoredGeneration(stored.revision, root, generation.files, stored.source, meta)
                generation = Generation(stored.revision, generation.state, generation.files, root)
        return Loaded(stored, generation)

    def rebuild(self, stored: StoredGeneration) -> tuple[Generation, bool] | None:
        """The Generation of a stored one: its `.source/` validated again, its files as stored, or
        rendered again (True) when they were signed with another report secret. None: invalid."""
        state = self._validate(Snapshot(stored.revision, stored.source, origin=str(stored.root)))
        if state is None:
            log.error("revision=%s the stored generation no longer validates", stored.revision)
            return None
        if stored.meta.get(REPORT_KEY_META) == self.meta[REPORT_KEY_META] and \
                stored.meta.get(SITE_META, b"") == self.meta.get(SITE_META, b""):
            return Generation(stored.revision, state, stored.files, stored.root), False
        log.warning("revision=%s was rendered with another report secret or for another --site (or before that "
                    "was recorded): rendering it again", stored.revision)
        try:
            files = dict(self.renderer(state))
        except Exception:  # a renderer bug must not stop the daemon starting (the reconcile reports it)
            log.exception("revision=%s could not be rendered again", stored.revision)
            return None
        return Generation(stored.revision, state, files, stored.root), True

    def _validate(self, snapshot: Snapshot) -> DesiredState | None:
        try:
            if not self.in_worker:
                return validate(snapshot).for_site(self.site)
            return worker.build(snapshot, None, site=self.site).state
        except InvalidRevision as exc:
            log.error("revision=%s %s", snapshot.revision, exc)
            return None

    def load(self, revision: str) -> Generation | None:
        """The holder's loader: a generation still on disk that this process has not loaded. Runs
        on a request thread; None when unknown or collected."""
        try:
            if not self.artifacts.path_of(revision).is_dir():
                return None
            stored = self.artifacts.load(revision)
        except ValueError:
            return None  # not a revision name
        except OSError as exc:  # collected meanwhile, or unreadable
            log.warning("revision=%s cannot be read from disk: %s", revision, exc)
            return None
        built = self.rebuild(stored)
        if built is None:
            return None
        log.info("revision=%s loaded from disk for a pinned URL (%d files)", revision, len(built[0].files))
        return built[0]
