"""Sync and status of the assets an assets.yaml lists, against the store under `--assets-dir`.

Called by `commands.assets` (`assets sync|status`) and by the daemon before it activates a
commit. `sync` runs the downloads (bounded parallelism), then the extractions from the images;
each entry is skipped when the store already holds what it names. Only verified content enters
the store; served paths (`publish`) and generation trees are links to it. A failed entry leaves
whatever its path served before untouched.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from reconciler.adapters import openpgp
from reconciler.adapters.assetfetch import CHUNK, AssetError, AssetInvalid, download, fetch_small
from reconciler.adapters.assetstore import AssetStore, Synced
from reconciler.adapters.isoimage import extract
from reconciler.core.assets import parse_checksums, rel, spec_key, sync_order, url_file_name
from reconciler.core.model import Asset

State = Literal["verified", "present", "missing", "mismatch", "failed"]


@dataclass(frozen=True)
class AssetState:
    """One entry's outcome (sync) or condition (status)."""

    path: str
    state: State
    detail: str = ""
    sha256: str | None = None
    invalid: bool = False  # failed for good: the bytes are not what the manifest says (AssetInvalid)

    @property
    def ok(self) -> bool:
        return self.state in ("verified", "present")


@dataclass(frozen=True)
class SyncResult:
    states: tuple[AssetState, ...]
    paths: Mapping[str, str]  # served path under --assets-dir -> sha256, for every managed entry that is good

    @property
    def failures(self) -> tuple[AssetState, ...]:
        return tuple(s for s in self.states if not s.ok)


class Reporter(Protocol):
    """Progress of a sync, for a progress bar or log lines. Called from worker threads."""

    def begin(self, path: str, what: str) -> None: ...

    def advance(self, path: str, done: int, total: int | None) -> None: ...

    def end(self, state: AssetState) -> None: ...


class Quiet:
    def begin(self, path: str, what: str) -> None:
        pass

    def advance(self, path: str, done: int, total: int | None) -> None:
        pass

    def end(self, state: AssetState) -> None:
        pass


@dataclass(frozen=True)
class Options:
    timeout: float = 30.0
    jobs: int = 4


def sync(
    assets: Iterable[Asset],
    store: AssetStore,
    options: Options = Options(),
    reporter: Reporter | None = None,
    publish: bool = True,
    generation: str | None = None,
) -> SyncResult:
    """Fetch, verify and extract what is missing; `publish` links the served paths to the results,
    `generation` links that revision's tree (both while the store is locked, so no collection
    sees new content before something links to it)."""
    entries = list(assets)
    report: Reporter = reporter or Quiet()
    with store.locked():
        run = _Run(entries, store, options, report)
        downloads, extractions = sync_order(entries)
        with ThreadPoolExecutor(max_workers=max(1, options.jobs), thread_name_prefix="asset") as pool:
            list(pool.map(run.fetch, downloads))
            list(pool.map(run.extract, extractions))
        good = {rel(s.path): s.sha256 for s in run.states.values() if s.ok and s.sha256 is not None}
        store.record({k: Synced(v, run.specs[k]) for k, v in good.items()})
        if publish:
            store.publish(good)
        if generation is not None:
            store.link_generation(generation, good)
    states = tuple(run.states[a.path] for a in entries if a.path in run.states)
    return SyncResult(states, good)


class _Run:
    def __init__(self, entries: list[Asset], store: AssetStore, options: Options, report: Reporter) -> None:
        self.by_path = {a.path: a for a in entries}
        self.store, self.options, self.report = store, options, report
        self.recorded = store.synced()
        self.states: dict[str, AssetState] = {}
        self.specs: dict[str, str] = {}
        self._lock = threading.Lock()
        self._url_locks: dict[str, threading.Lock] = {}

    def _done(self, asset: Asset, state: AssetState, spec: str | None = None) -> None:
        with self._lock:
            self.states[asset.path] = state
            if spec is not None:
                self.specs[rel(asset.path)] = spec
        self.report.end(state)

    def _url_lock(self, url: str) -> threading.Lock:
        with self._lock:
            return self._url_locks.setdefault(url, threading.Lock())

    def _unchanged(self, asset: Asset, spec: str) -> str | None:
        """The sha256 the last sync gave this path for the same spec, when the store still holds it."""
        rec = self.recorded.get(rel(asset.path))
        if rec is not None and rec.spec == spec and self.store.has(rec.sha256):
            return rec.sha256
        return None

    def fetch(self, asset: Asset) -> None:
        assert asset.url is not None
        spec = spec_key(asset)
        try:
            with self._url_lock(asset.url):
                sha = self._unchanged(asset, spec)
                if sha is None:
                    sha = self._download(asset)
        except AssetError as exc:
            self._done(asset, AssetState(asset.path, "failed", str(exc), invalid=isinstance(exc, AssetInvalid)))
            return
        self._done(asset, AssetState(asset.path, "verified", "", sha), spec)

    def _download(self, asset: Asset) -> str:
        assert asset.url is not None
        expected = asset.sha256
        if asset.checksums is not None:
            listed = self._checksum_of(asset)
            if expected is not None and listed != expected:
                raise AssetInvalid(f"{asset.path}: sha256 {expected} in assets.yaml, {listed} in {asset.checksums}")
            expected = listed
        assert expected is not None  # validation refuses a url nothing verifies
        if self.store.has(expected):
            return expected
        placed = self.store.served(rel(asset.path))
        if placed.is_file() and not placed.is_symlink() and _file_sha(placed) == expected:
            self.store.adopt_in_place(placed, expected)  # downloaded by hand before: not again
            return expected
        self.report.begin(asset.path, asset.url)
        partial = self.store.partial(expected)
        download(asset.url, partial, expected, self.options.timeout,
                 lambda done, total: self.report.advance(asset.path, done, total), asset.size)
        self.store.adopt(partial, expected)
        return expected

    def _checksum_of(self, asset: Asset) -> str:
        assert asset.url is not None and asset.checksums is not None
        sums = fetch_small(asset.checksums, self.options.timeout)
        if asset.signature is not None:
            signature = fetch_small(asset.signature, self.options.timeout)
            openpgp.verify_detached(sums, signature, asset.keyring_data or b"", asset.checksums)
        name = url_file_name(asset.url)
        listed = parse_checksums(sums.decode("utf-8", "replace"), name)
        if listed is None:
            raise AssetInvalid(f"{asset.checksums}: lists no sha256 for {name}")
        return listed

    def extract(self, asset: Asset) -> None:
        assert asset.from_path is not None and asset.file is not None
        try:
            image = self._image(asset)
            image_sha = _file_sha(image) if not self._in_store(image) else image.name
            spec = f"{spec_key(asset)}:{image_sha}"
            sha = self._unchanged(asset, spec)
            if sha is None:
                sha = self._extract(asset, image)
        except AssetError as exc:
            self._done(asset, AssetState(asset.path, "failed", str(exc), invalid=isinstance(exc, AssetInvalid)))
            return
        self._done(asset, AssetState(asset.path, "verified", "", sha), spec)

    def _image(self, asset: Asset) -> Path:
        assert asset.from_path is not None
        source = self.by_path[asset.from_path]
        if source.fetched:
            state = self.states.get(source.path)
            if state is None or state.sha256 is None:
                why = state.detail if state is not None else "not fetched"
                failed = AssetInvalid if state is not None and state.invalid else AssetError
                raise failed(f"{asset.path}: its image {source.path} failed: {why}")
            return self.store.blob(state.sha256)
        image = self.store.served(rel(source.path))  # placed by hand
        if not image.is_file():
            raise AssetError(f"{asset.path}: its image {source.path} is not under the assets directory")
        return image

    def _in_store(self, path: Path) -> bool:
        return path.is_relative_to(self.store.dir / "blobs")  # named by its sha256

    def _extract(self, asset: Asset, image: Path) -> str:
        assert asset.file is not None
        self.report.begin(asset.path, f"{asset.from_path}:{asset.file}")
        tmp = self.store.tmp_dir() / f"{os.getpid()}-{threading.get_ident()}-{rel(asset.path).replace('/', '_')}"
        sha, _size = extract(image, asset.file, tmp, asset.path)
        if asset.sha256 is not None and sha != asset.sha256:
            tmp.unlink(missing_ok=True)
            raise AssetInvalid(f"{asset.path}: sha256 mismatch: {asset.file} in the image is {sha}, "
                             f"assets.yaml says {asset.sha256} (deleted)")
        self.store.adopt(tmp, sha)
        return sha


def _file_sha(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def status(assets: Iterable[Asset], store: AssetStore) -> tuple[AssetState, ...]:
    """Each entry: verified (its path links to content verified for this entry, or matches its
    sha256), present (a file nothing can check), missing, or mismatch (other content)."""
    recorded = store.synced()
    out: list[AssetState] = []
    for asset in assets:
        path = store.served(rel(asset.path))
        if not path.is_file():
            out.append(AssetState(asset.path, "missing", "not under the assets directory"))
            continue
        rec = recorded.get(rel(asset.path))
        if asset.managed and rec is not None and store.links_to(path, rec.sha256):
            spec = rec.spec.split(":", 1)[0]
            if spec != spec_key(asset):
                out.append(AssetState(asset.path, "mismatch", "synced for another assets.yaml entry: run assets sync",
                                      rec.sha256))
            elif asset.sha256 is not None and rec.sha256 != asset.sha256:
                out.append(AssetState(asset.path, "mismatch", f"holds {rec.sha256}", rec.sha256))
            else:
                out.append(AssetState(asset.path, "verified", "", rec.sha256))
            continue
        if asset.sha256 is not None:
            sha = _file_sha(path)
            state: State = "verified" if sha == asset.sha256 else "mismatch"
            out.append(AssetState(asset.path, state, "" if state == "verified" else f"holds {sha}", sha))
        elif asset.managed:
            out.append(AssetState(asset.path, "mismatch", "not what assets sync put there: run assets sync"))
        else:
            out.append(AssetState(asset.path, "present", "placed by hand; no sha256 to check it against"))
    return tuple(out)
