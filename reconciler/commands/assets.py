"""`netboot-reconcile assets sync|status [PATH] --assets-dir DIR`.

`sync` fetches, verifies and extracts what the repository's assets.yaml lists into the content
store under DIR (`adapters.assetsync`) and links the served paths to it: exit 0 when every entry
is present and verified, 1 when one failed (each named with why), 2 on usage, an unreadable or
invalid assets.yaml (read on its own). A progress bar on a terminal (rich), one line per asset
otherwise. Content nothing links to any more (an old kernel; not one a kept daemon generation
uses) is removed after the sync. `status` lists each entry as verified, present, missing or
mismatch: exit 0 when none is missing or mismatched, else 1.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

from reconciler.adapters.assetstore import AssetStore
from reconciler.adapters.assetsync import AssetState, Options, Reporter, status, sync
from reconciler.adapters.dirsource import read_directory
from reconciler.core import build, findings
from reconciler.core.collect import Findings
from reconciler.core.model import Asset
from reconciler.core.snapshot import ASSETS_FILE
from reconciler.core.yamldoc import parse_yaml

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("assets", help="fetch, verify and extract boot assets; show their state", allow_abbrev=False)
    actions = p.add_subparsers(dest="assets_action", metavar="ACTION", required=True)
    for name, help_text in (("sync", "fetch, verify and extract what assets.yaml lists"),
                            ("status", "list each asset: verified, present, missing or mismatch")):
        a = actions.add_parser(name, help=help_text, allow_abbrev=False)
        a.add_argument("path", nargs="?", default=".", type=Path, help="repository directory (default: .)")
        a.add_argument("--assets-dir", required=True, type=Path, metavar="DIR", help="the directory /assets/ serves")
        if name == "sync":
            a.add_argument("--jobs", type=int, default=4, metavar="N", help="downloads at once (default: 4)")
            a.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                           help="seconds without an answer before a download fails (default: 30)")
        a.set_defaults(func=run)


def _manifest(path: Path) -> tuple[Asset, ...] | None:
    """assets.yaml of the repository at `path`, checked on its own (a typo in a node file does not
    stop a sync); None, with the findings printed, when it is invalid."""
    snapshot = read_directory(path)
    raw = snapshot.files.get(ASSETS_FILE)
    if raw is None:
        print(f"netboot-reconcile assets: {path} has no {ASSETS_FILE}: nothing to do", file=sys.stderr)
        return ()
    out = Findings()
    out.extend(i for i in snapshot.refused if i.file == ASSETS_FILE or i.file.startswith("keys/"))
    doc, issues = parse_yaml(ASSETS_FILE, raw)
    out.extend(issues)
    assets = build.assets(doc, snapshot.files, out) if doc is not None else None
    if assets is None or any(i.is_error for i in out.issues):
        sys.stderr.write(findings.format_text(tuple(out.issues)))
        print(f"netboot-reconcile assets: {path}/{ASSETS_FILE} is not valid", file=sys.stderr)
        return None
    return assets


def run(args: argparse.Namespace) -> int:
    try:
        assets = _manifest(args.path)
    except OSError as exc:
        print(f"netboot-reconcile assets: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if assets is None:
        return EXIT_ERROR
    store = AssetStore(args.assets_dir)
    if args.assets_action == "status":
        states = status(assets, store)
        for s in states:
            print(_line(s))
        return EXIT_OK if all(s.ok for s in states) else EXIT_FAILED
    if args.jobs < 1 or args.timeout <= 0:
        print("netboot-reconcile assets sync: --jobs and --timeout must be positive", file=sys.stderr)
        return EXIT_ERROR
    try:
        args.assets_dir.mkdir(parents=True, exist_ok=True)
        options = Options(timeout=args.timeout, jobs=args.jobs)
        if sys.stderr.isatty():
            with _Bar() as bar:
                reporter: Reporter = bar
                result = sync(assets, store, options, reporter)
        else:
            reporter = _Lines()
            result = sync(assets, store, options, reporter)
        freed = store.collect()  # content no served path and no kept generation links to any more
    except OSError as exc:
        print(f"netboot-reconcile assets sync: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if freed:
        print(f"removed {freed} bytes of content nothing links to any more", file=sys.stderr)
    done = len(result.states) - len(result.failures)
    print(f"{done} of {len(result.states)} assets verified under {args.assets_dir}", file=sys.stderr)
    return EXIT_OK if not result.failures else EXIT_FAILED


def _line(s: AssetState) -> str:
    tail = f"  sha256:{s.sha256}" if s.sha256 and s.state == "verified" else ""
    detail = f"  {s.detail}" if s.detail else ""
    return f"{s.state:<9} {s.path}{tail}{detail}"


class _Lines:
    """One line per asset (not a terminal: logs, CI)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def begin(self, path: str, what: str) -> None:
        with self._lock:
            print(f"fetching  {path}  from {what}", file=sys.stderr, flush=True)

    def advance(self, path: str, done: int, total: int | None) -> None:
        pass

    def end(self, state: AssetState) -> None:
        with self._lock:
            print(_line(state), file=sys.stderr, flush=True)


class _Bar:
    """A rich progress bar per download or extraction, on the terminal."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), console=Console(stderr=True))
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def begin(self, path: str, what: str) -> None:
        with self._lock:
            self._tasks[path] = self._progress.add_task(path, total=None)

    def advance(self, path: str, done: int, total: int | None) -> None:
        task = self._tasks.get(path)
        if task is not None:
            self._progress.update(task, completed=done, total=total)

    def end(self, state: AssetState) -> None:
        task = self._tasks.get(state.path)
        if task is not None:
            self._progress.update(task, description=f"{state.path} {state.state}")
        self._progress.console.print(_line(state))

