"""Sources of desired state: a git remote (bare mirror), a local repository, or a plain directory.

Called by the daemon's fetch and snapshot steps (`reconciler.daemon.steps`), built once by
`open_source(settings)`. Every source answers two questions:

- `fetch()`: which revision should be served now? (network for a remote; raises `SourceUnavailable`
  (`core.errors.Temporary`) on a failure, which the daemon retries with backoff while it keeps serving)
- `snapshot(revision)`: the repository files of that revision, read straight from the commit's
  tree (no checkout, no work tree), with the same refusals as `adapters.dirsource`: symlinks,
  submodules, files over `MAX_FILE_BYTES`. A revision or `--path` the commit lacks raises
  `core.errors.InvalidRevision`.

Kinds, by what `--repo` names:
- a URL (https://, ssh://, scp-style user@host:path, file://): a bare mirror `repo.git` under the
  state directory, fetched with `+refs/heads/*:refs/heads/*` so force-pushes are followed. A poll
  first lists the remote's heads (cheap) and fetches only when the branch moved.
- a local git repository (work tree or bare): opened in place; the daemon follows the branch's
  commits, never uncommitted edits.
- a plain directory: served as-is (development); revision = a content digest.

SSH host keys are checked against `known_hosts` strictly: pygit2's default certificate check
lets ANY SSH host key through, so `certificate_check` returns libgit2's own verdict (`valid`),
computed against `<homedir>/.ssh/known_hosts`; with `--known-hosts FILE` the libgit2 home
directory is pointed at a private copy of that file, with `@revoked` keys taken out
(`adapters.known_hosts`; `@cert-authority` is refused at start). Credential callbacks are capped, since
libgit2 keeps asking for as long as they answer.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import pygit2

from reconciler.adapters import looseobj, rawtree
from reconciler.adapters.commitsig import Signers, verify_commit
from reconciler.adapters.commitsig import invalid as invalid_commit
from reconciler.adapters.dirsource import read_directory
from reconciler.adapters.known_hosts import strict_known_hosts
from reconciler.core.errors import InvalidRevision, SourceUnavailable
from reconciler.core.model import Issue, Severity
from reconciler.core.snapshot import (
    MAX_FILE_BYTES,
    Changes,
    Snapshot,
    bad_name,
    is_candidate_dir,
    kind_of,
    not_read,
    refuse_size,
    refuse_submodule,
    refuse_symlink,
)
from reconciler.settings import Settings

log = logging.getLogger(__name__)

MIRROR_DIR = "repo.git"
SSH_HOME_DIR = "ssh-home"
MAX_CREDENTIAL_ATTEMPTS = 3
# libgit2's network timeouts (ms). Without them a remote that accepts the connection and never
# answers held the reconcile loop for good: no backoff, no new commit, /status "Progressing".
# A read counts from the last bytes received; a server packing a large repository sends progress.
CONNECT_TIMEOUT_MS = 30_000
SERVER_TIMEOUT_MS = 120_000
_SCP_STYLE = re.compile(r"^(?:[^@/:]+@)?[^/:]+:(?!//)")
_homedir_lock = threading.Lock()


__all__ = ["RepositoryNotOwned", "SourceProblem", "SourceUnavailable", "open_repository", "open_source", "read_tree"]


class SourceProblem(SourceUnavailable):
    """The source `--repo` names cannot be opened (no such path): fatal at start-up with nothing on
    disk to serve; for a running daemon a temporary failure like any other (a volume mounted late)."""


class Source(Protocol):
    """What the daemon reads desired state from."""

    description: str
    local: Path | None  # a directory to watch for changes (inotify), when there is one

    def fetch(self) -> str: ...

    def snapshot(self, revision: str) -> Snapshot: ...

    def verify(self, revision: str, signers: Signers) -> str: ...

    def close(self) -> None: ...


def is_url(repo: str) -> bool:
    """Whether `--repo` names a remote (a URL or scp-style address) rather than a local path."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", repo):
        return True
    return bool(_SCP_STYLE.match(repo)) and not os.path.exists(repo)


def is_ssh(url: str) -> bool:
    return url.startswith(("ssh://", "git+ssh://", "ssh+git://")) or (
        "://" not in url and bool(_SCP_STYLE.match(url))
    )


def open_source(settings: Settings, progress: Callable[[str], None] | None = None) -> Source:
    """The Source `--repo` names (see the module docstring)."""
    repo = settings.repo
    if is_url(repo):
        return MirrorSource(settings, progress)
    path = Path(repo).expanduser()
    if not path.exists():
        raise SourceProblem(f"{repo}: no such file or directory")
    found = pygit2.discover_repository(str(path))
    if found is not None:
        git_repo = open_repository(found)
        top = Path(git_repo.workdir or git_repo.path).resolve()
        if top == path.resolve() or (git_repo.is_bare and Path(found).resolve() == path.resolve()):
            return LocalGitSource(git_repo, settings)
    if settings.verify_commits is not None:
        raise ValueError(f"--verify-commits: {repo} is a plain directory, not a git repository: it has no signed "
                         "commits to verify")
    return DirectorySource(path, settings.path)


class RepositoryNotOwned(SourceProblem):
    """A local repository another user owns: libgit2 refuses it, as git does (safe.directory)."""


_NOT_OWNED = re.compile(r"repository path '(.*)' is not owned by current user")


def open_repository(path: str | Path) -> pygit2.Repository:
    """The local repository at `path` (what `pygit2.discover_repository` found). One another user
    owns (the shipped unit's DynamicUser=yes meets every repository not made by the service) is
    refused with an error naming the path and the fix, not a traceback."""
    try:
        return pygit2.Repository(str(path))
    except pygit2.GitError as exc:
        match = _NOT_OWNED.search(str(exc))
        if match is None:
            raise
        raise RepositoryNotOwned(_not_owned(match.group(1))) from exc


def _not_owned(checked: str) -> str:
    try:
        uid = os.stat(checked).st_uid
    except OSError:
        owner = "another user"
    else:
        try:
            owner = f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
        except KeyError:
            owner = f"uid {uid}"
    return (f"{checked}: the repository is owned by {owner}, not by the user netboot-reconcile runs as "
            f"(uid {os.geteuid()}), and git refuses a repository another user owns. Trust it for every user: "
            f"`git config --system --add safe.directory {checked}` (and let this user read it); or run as its "
            "owner; or give --repo as an ssh:// or https:// URL, mirrored into the state directory")


# -- reading a commit's tree ------------------------------------------------------------------


def read_tree(repo: pygit2.Repository, revision: str, subdir: str = "", origin: str = "",
              cache: TreeCache | None = None) -> Snapshot:
    """The repository format's files in commit `revision` (under `subdir`), without a checkout.
    `cache` (a source's, kept between commits): only the entries that differ from the tree read
    last time are read again (`_read_dir`); the snapshot is the same as without it, order
    included, and says which files changed when only files did (`Snapshot.changes`)."""
    try:
        commit = repo.revparse_single(revision).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError) as exc:
        raise _invalid(subdir, f"revision {revision} not found: {exc}") from exc
    tree_id = commit.tree_id
    if subdir:
        try:
            entry = commit.tree[subdir.strip("/")]
        except KeyError as exc:
            raise _invalid(subdir, f"--path {subdir}: not in commit {revision[:12]}") from exc
        if entry.filemode != pygit2.GIT_FILEMODE_TREE:
            raise _invalid(subdir, f"--path {subdir}: not a directory in commit {revision[:12]}")
        tree_id = entry.id
    changes: Changes | None = None
    if cache is None:
        files, refused, unread = _flattened(_read_dir(_Reading(repo, keep=False), tree_id, "", None))
    else:
        with cache.lock:
            (files, refused, unread), changes = _read_cached(repo, tree_id, subdir, str(commit.id), cache)
    snapshot = Snapshot(
        revision=str(commit.id),
        files=files,
        refused=refused,
        unread=unread,
        origin=origin,
        extra={
            "message": commit.message.strip().splitlines()[0] if commit.message.strip() else "",
            "author": f"{commit.author.name} <{commit.author.email}>",
            "time": str(commit.commit_time),
        },
    )
    return snapshot.with_changes(changes) if changes is not None else snapshot


def _read_cached(repo: pygit2.Repository, tree_id: pygit2.Oid, subdir: str, revision: str, cache: TreeCache
                 ) -> tuple[_Flat, Changes | None]:
    """`read_tree`'s files with `cache` (its lock held), and what changed since the cache's last."""
    old = cache.last if cache.subdir == subdir and cache.flat is not None else None
    changes: Changes | None
    try:
        if old is not None and cache.flat is not None and old.oid == tree_id:
            root, flat, changes = old, cache.flat, Changes(cache.revision, ())
        else:
            reading = _Reading(repo, keep=True)
            root = _read_dir(reading, tree_id, "", old)
            again = _reflattened(reading, cache.flat) if old is not None and cache.flat is not None else None
            flat = _flattened(root) if again is None else again[0]
            changes = Changes(cache.revision, again[1]) if again is not None else None
    except BaseException:
        cache.last = cache.flat = None  # its directories' entries may be changed in place half-way
        raise
    cache.subdir, cache.last, cache.flat, cache.revision = subdir, root, flat, revision
    return flat, changes


def _invalid(subdir: str, message: str) -> InvalidRevision:
    return InvalidRevision(message, (Issue(subdir or ".", 0, 0, "source", Severity.ERROR, message),))


def read_incrementally(repo: pygit2.Repository, revision: str, settings: Settings, origin: str,
                       cache: TreeCache) -> Snapshot:
    """A source's snapshot with its `cache`; with --verify-incremental also read from scratch: on
    a difference that one is used, the cache emptied, and the difference logged as an error."""
    snapshot = read_tree(repo, revision, settings.path, origin, cache)
    if not settings.verify_incremental:
        return snapshot
    scratch = read_tree(repo, revision, settings.path, origin)
    if scratch != snapshot:
        differ = sorted(p for p in snapshot.files.keys() | scratch.files.keys()
                        if snapshot.files.get(p) != scratch.files.get(p))
        log.error("verify-incremental: revision=%s the incremental tree read differs from a full read (a bug: "
                  "please report this): files %s, refused/unread %s", revision, ", ".join(differ[:10]) or "-",
                  (snapshot.refused, snapshot.unread) != (scratch.refused, scratch.unread))
        with cache.lock:
            cache.last = cache.flat = None
    return scratch


class TreeCache:
    """The last tree a source read (`read_tree(cache=...)`): each directory's entries' outcomes.

    libgit2 keeps trees of up to 4 KiB in its object cache (its default): a directory of 10,000
    node files (one ~430 KB tree object) is read once a commit, as bytes, and kept here
    (`_Dir.raw`); kept by libgit2 as well (a limit of 64 MiB until 2026-12-07, for its diff), each
    commit's version stayed in its cache up to its 256 MiB bound (100,000 files: +110 MB of RSS
    over 25 commits, against +9 MB).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.subdir = ""
        self.last: _Dir | None = None
        # `last` flattened: its files in order, refused and unread. The snapshot read_tree makes
        # holds the same dict: it is never changed, a commit's changes go into a copy.
        self.flat: _Flat | None = None
        self.revision = ""  # the commit `last` is the tree of


_Flat = tuple[dict[str, bytes], tuple[Issue, ...], tuple[Issue, ...]]  # files in order, refused, unread


class _Outcome(NamedTuple):
    order: bytes  # git's tree order: the name's bytes, a directory's with "/" after it
    kind: str  # "file" (value: its bytes), "refused" or "unread" (an Issue), "dir" (a _Dir)
    path: str
    value: Any


class _Dir(NamedTuple):
    oid: pygit2.Oid
    entries: dict[str, _Outcome]  # by name, in tree order; entries the format ignores left out
    raw: rawtree.Raw | None = None  # its tree object's bytes (read with a cache: the next read compares them)


class _Reading:
    """One read of a commit's tree: what it keeps and what it found changed."""

    def __init__(self, repo: pygit2.Repository, keep: bool) -> None:
        self.repo = repo
        self.objects = os.path.join(repo.path, "objects")  # where its loose objects are (adapters.looseobj)
        self.keep = keep  # a cache's read: keep each directory's tree object bytes (`_Dir.raw`)
        # Each entry that differs from the last read's in a directory compared with it: before, after.
        self.changes: list[tuple[_Outcome | None, _Outcome | None]] = []
        self.whole = False  # a directory the last read had was read whole (what changed in it is not listed)


def _read_dir(reading: _Reading, oid: pygit2.Oid, prefix: str, old: _Dir | None) -> _Dir:
    """A directory's outcomes: `old`'s when the tree is the same; `old`'s updated for the entries
    that differ (`rawtree.changed`: only the bytes around them are read), in place (the cache's
    old tree is not read again); or (no `old`, or a tree `rawtree` cannot read) every entry's."""
    if old is not None and old.oid == oid:
        return old
    repo = reading.repo
    found: tuple[dict[str, rawtree.Entry | None], rawtree.Raw] | None = None
    raw = None
    if reading.keep:
        # inflated and its hash checked, the GIL let go (adapters.looseobj); else by libgit2
        data = looseobj.read(reading.objects, b"tree", oid.raw) or repo.odb.read(oid)[1]
        if old is not None and old.raw is not None:
            found = rawtree.changed(old.raw, data, len(oid.raw))
        if found is None:
            raw = rawtree.indexed(data, len(oid.raw))
    if old is None or found is None:
        reading.whole = reading.whole or old is not None
        entries: dict[str, _Outcome] = {}
        for entry in repo[oid].peel(pygit2.Tree):
            name = entry.name or ""
            outcome = _outcome(reading, name, entry.filemode, entry.id, prefix, None, entry)
            if outcome is not None:
                entries[name] = outcome
        return _Dir(oid, entries, raw)
    touched, raw = found
    entries = old.entries
    added = False  # a name new here (or a file become a directory) goes at the end: order again
    for name, new in touched.items():
        was = entries.get(name)
        outcome = None if new is None else _outcome(
            reading, name, _filemode(new[0]), pygit2.Oid(raw=new[1]), prefix,
            was.value if was is not None and was.kind == "dir" else None)
        if was is None and outcome is None:
            continue  # a name the format ignores
        reading.changes.append((was, outcome))
        if outcome is None:
            del entries[name]
            continue
        entries[name] = outcome
        added = added or was is None or was.order != outcome.order
    if added:
        entries = dict(sorted(entries.items(), key=lambda item: item[1].order))
    return _Dir(oid, entries, raw)


def _filemode(mode: int) -> int:
    """An entry's mode as written, as libgit2 gives it (`git_tree_entry_filemode`)."""
    kind = mode & 0o170000
    if kind == pygit2.GIT_FILEMODE_TREE:
        return pygit2.GIT_FILEMODE_TREE
    if mode & 0o100:
        return pygit2.GIT_FILEMODE_BLOB_EXECUTABLE
    if kind in (pygit2.GIT_FILEMODE_COMMIT, pygit2.GIT_FILEMODE_LINK):
        return kind
    return pygit2.GIT_FILEMODE_BLOB


def _outcome(reading: _Reading, name: str, mode: int, oid: pygit2.Oid, prefix: str, old: _Dir | None,
             entry: pygit2.Object | None = None) -> _Outcome | None:
    """What one tree entry gives the snapshot (None: nothing, the format ignores it). `entry`:
    libgit2's, when the directory was read through it."""
    rel = f"{prefix}/{name}" if prefix else name
    is_dir = mode == pygit2.GIT_FILEMODE_TREE
    try:
        order = (name + "/" if is_dir else name).encode()
    except UnicodeEncodeError:  # a name that is not UTF-8 (decoded by pygit2 and rawtree as os.fsdecode does)
        return _bad_name(os.fsencode(name + "/" if is_dir else name), rel, is_dir)
    if is_dir:
        if is_candidate_dir(rel):
            return _Outcome(order, "dir", rel, _read_dir(reading, oid, rel, old))
        miss = not_read(rel, is_dir=True)
        return _Outcome(order, "unread", rel, miss) if miss is not None else None
    if mode == pygit2.GIT_FILEMODE_COMMIT:
        if is_candidate_dir(rel) or kind_of(rel) is not None:
            return _Outcome(order, "refused", rel, refuse_submodule(rel))
        return None
    if mode == pygit2.GIT_FILEMODE_LINK:
        if is_candidate_dir(rel) or kind_of(rel) is not None:
            return _Outcome(order, "refused", rel, refuse_symlink(rel))
        return None
    if kind_of(rel) is None:
        miss = not_read(rel, is_dir=False)
        return _Outcome(order, "unread", rel, miss) if miss is not None else None
    _kind, size = reading.repo.odb.read_header(oid)
    if size > MAX_FILE_BYTES:
        return _Outcome(order, "refused", rel, refuse_size(rel, size))
    # The entry itself is the blob (pygit2 loads it on first use): what `repo[oid]` would
    # look up again, through Repository.__getitem__ and a peel (100,000 files: 1.05 -> 0.87 s).
    blob = entry if isinstance(entry, pygit2.Blob) else reading.repo[oid].peel(pygit2.Blob)
    return _Outcome(order, "file", rel, blob.data)


def _bad_name(order: bytes, rel: str, is_dir: bool) -> _Outcome | None:
    """An entry whose name is not UTF-8 (`order`: its bytes, git's order), whatever its mode, as
    `snapshot.bad_name` says (as dirsource does). Never a candidate directory."""
    said = bad_name(rel, is_dir)
    return _Outcome(order, "refused" if said.is_error else "unread", rel, said) if said is not None else None


def _flattened(root: _Dir) -> _Flat:
    files: dict[str, bytes] = {}
    refused: list[Issue] = []
    unread: list[Issue] = []
    _flatten(root, files, refused, unread)
    return files, tuple(refused), tuple(unread)


def _reflattened(reading: _Reading, flat: _Flat) -> tuple[_Flat, tuple[str, ...]] | None:
    """`_flattened` of the tree just read, from the last one's (`flat`), and the paths whose bytes
    changed, when every entry that differs is a file in both trees, or a directory in both (the
    paths and their order, refusals and unread ones the same: a commit that edits files); None
    otherwise. One copy of the files, which the snapshot then holds as it is."""
    if reading.whole:
        return None
    files = flat[0]
    changed: dict[str, bytes] = {}
    for was, now in reading.changes:
        if was is None or now is None:
            return None
        if was.kind == now.kind == "dir":
            continue  # what changed in it is listed entry by entry
        if was.kind == now.kind == "file" and was.path == now.path and was.path in files:
            changed[now.path] = now.value
            continue
        return None
    if not changed:
        return flat, ()
    files = dict(files)
    files.update(changed)
    return (files, flat[1], flat[2]), tuple(changed)


def _flatten(directory: _Dir, files: dict[str, bytes], refused: list[Issue], unread: list[Issue]) -> None:
    for outcome in directory.entries.values():
        if outcome.kind == "file":
            files[outcome.path] = outcome.value
        elif outcome.kind == "dir":
            _flatten(outcome.value, files, refused, unread)
        else:
            (refused if outcome.kind == "refused" else unread).append(outcome.value)


# -- remote mirror -------------------------------------------------------------------------------


class _Callbacks(pygit2.RemoteCallbacks):
    """Credentials (capped), strict host keys, optional progress."""

    def __init__(self, settings: Settings, progress: Callable[[str], None] | None) -> None:
        super().__init__()
        self._settings = settings
        self._progress = progress
        self._attempts = 0
        self.refused_host: str | None = None

    def credentials(self, url: str, username_from_url: str | None, allowed_types: Any) -> Any:
        self._attempts += 1
        if self._attempts > MAX_CREDENTIAL_ATTEMPTS:
            raise SourceUnavailable(f"authentication failed for {url} after {MAX_CREDENTIAL_ATTEMPTS} attempts")
        user = username_from_url or "git"
        if allowed_types & pygit2.enums.CredentialType.SSH_KEY:
            key = self._settings.ssh_key
            if key is not None:
                pub = Path(str(key) + ".pub")
                return pygit2.Keypair(user, str(pub) if pub.exists() else None, str(key), "")
            return pygit2.KeypairFromAgent(user)
        if allowed_types & pygit2.enums.CredentialType.USERPASS_PLAINTEXT and self._settings.https_token:
            return pygit2.UserPass(username_from_url or "x-access-token", self._settings.https_token)
        if allowed_types & pygit2.enums.CredentialType.USERNAME:
            return pygit2.Username(user)
        raise SourceUnavailable(f"{url} asks for credentials and none were given")

    def certificate_check(self, certificate: Any, valid: bool, host: bytes) -> bool:
        # libgit2 computed `valid` against known_hosts (SSH) or the CA store (TLS). pygit2's
        # default passes any SSH host key through; we refuse what libgit2 could not verify.
        if not valid:
            self.refused_host = host.decode(errors="replace")
        return bool(valid)

    def transfer_progress(self, stats: Any) -> None:
        if self._progress is not None and stats.total_objects:
            self._progress(
                f"receiving objects: {stats.received_objects}/{stats.total_objects}, "
                f"indexed {stats.indexed_objects}, {stats.received_bytes // 1024} KiB"
            )


def _open_mirror(path: Path) -> pygit2.Repository:
    """The bare mirror at `path`, made when missing. It is only a cache of the remote: one that
    libgit2 cannot open (a damaged config, a half-written HEAD) is made again rather than keep
    the daemon from starting, and from serving `current`."""
    if (path / "HEAD").exists():
        try:
            return pygit2.Repository(str(path))
        except pygit2.GitError as exc:
            log.warning("mirror %s cannot be opened (%s): fetching it again", path, exc)
            shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return pygit2.init_repository(str(path), bare=True)


class MirrorSource:
    """A bare mirror of a remote under the state directory; fetches `+refs/heads/*`."""

    def __init__(self, settings: Settings, progress: Callable[[str], None] | None = None) -> None:
        self._settings = settings
        self._progress = progress
        self.url = settings.repo
        self.description = _redact(settings.repo) + (f" ({settings.branch})" if settings.branch else "")
        self._tree = TreeCache()
        self.local: Path | None = None
        if is_ssh(self.url):
            # Without --known-hosts libgit2 reads ~/.ssh/known_hosts; ours is made of it likewise.
            user_file = Path("~/.ssh/known_hosts").expanduser()
            known_hosts = settings.known_hosts or (user_file if user_file.is_file() else None)
            if known_hosts is not None:
                _use_known_hosts(settings.state_dir / SSH_HOME_DIR, known_hosts)
        pygit2.settings.server_connect_timeout = CONNECT_TIMEOUT_MS
        pygit2.settings.server_timeout = SERVER_TIMEOUT_MS
        path = settings.state_dir / MIRROR_DIR
        self.repo = _open_mirror(path)
        names = list(self.repo.remotes.names())
        if "origin" not in names:
            self.repo.remotes.create("origin", self.url, "+refs/heads/*:refs/heads/*")
        elif self.repo.remotes["origin"].url != self.url:
            self.repo.remotes.set_url("origin", self.url)
        self.branch = settings.branch

    def _callbacks(self) -> _Callbacks:
        return _Callbacks(self._settings, self._progress if self._settings.progress else None)

    def fetch(self) -> str:
        remote = self.repo.remotes["origin"]
        cb = self._callbacks()
        try:
            heads = remote.list_heads(callbacks=cb)
        except (pygit2.GitError, OSError) as exc:
            raise SourceUnavailable(self._why(exc, cb)) from exc
        by_name = {h.name: h for h in heads}
        branch = self.branch
        if branch is None:
            head = by_name.get("HEAD")
            target = head.symref_target if head is not None else None
            if not target:
                raise SourceUnavailable(
                    f"{self.description}: the remote does not say its default branch: pass --branch")
            branch = target.removeprefix("refs/heads/")
        ref = f"refs/heads/{branch}"
        advertised = by_name.get(ref)
        if advertised is None:
            raise SourceUnavailable(f"{self.description}: no branch {branch!r} on the remote")
        want = str(advertised.oid)
        have = self.repo.references.get(ref)
        if have is None or str(have.target) != want or want not in self.repo:
            cb = self._callbacks()
            try:
                remote.fetch(callbacks=cb, prune=pygit2.enums.FetchPrune.PRUNE)
            except (pygit2.GitError, OSError) as exc:
                raise SourceUnavailable(self._why(exc, cb)) from exc
            have = self.repo.references.get(ref)
            if have is None:
                raise SourceUnavailable(f"{self.description}: branch {branch!r} vanished during the fetch")
            want = str(have.target)
        return want

    def _why(self, exc: BaseException, cb: _Callbacks) -> str:
        if cb.refused_host is not None:
            return (f"{_redact(self.url)}: host key of {cb.refused_host} not verified against known_hosts "
                    f"(not listed, a different key, or @revoked): {exc}")
        cause = exc.__context__ if isinstance(exc.__context__, SourceUnavailable) else None
        return f"{_redact(self.url)}: {cause or exc}"

    def snapshot(self, revision: str) -> Snapshot:
        return read_incrementally(self.repo, revision, self._settings, self.description, self._tree)

    def verify(self, revision: str, signers: Signers) -> str:
        return verify_commit(self.repo, revision, signers)

    def close(self) -> None:
        self.repo.free()


def _use_known_hosts(home: Path, known_hosts: Path) -> None:
    """Point libgit2's home directory at a private one whose .ssh/known_hosts is `known_hosts`
    as libssh2 can check it strictly (`adapters.known_hosts`: no `@revoked` key in it).

    Raises `KnownHostsError` (a ValueError: a start-up error) for a line it cannot honour."""
    text = known_hosts.read_text("utf-8", errors="replace")
    trusted, revoked = strict_known_hosts(text, str(known_hosts))
    if revoked:
        log.info("%s: %d @revoked host key(s) are refused for every host", known_hosts, revoked)
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = ssh / "known_hosts.tmp"
    tmp.write_text(trusted, "utf-8")
    tmp.replace(ssh / "known_hosts")
    with _homedir_lock:
        pygit2.settings.homedir = str(home)


def _redact(url: str) -> str:
    """A URL without its password or token (the user name stays: it helps debugging)."""
    return re.sub(r"://([^/@:]*):[^/@]*@", r"://\1:***@", url)


# -- local repository, in place ----------------------------------------------------------------


class LocalGitSource:
    """A local repository (work tree or bare) opened in place; follows the branch's commits."""

    def __init__(self, repo: pygit2.Repository, settings: Settings) -> None:
        self.repo = repo
        self._settings = settings
        self.local: Path | None = Path(repo.path)  # the .git directory: commits change it, edits do not
        branch = settings.branch
        if branch is None and not repo.head_is_unborn and not repo.head_is_detached:
            branch = repo.head.shorthand
        elif branch is None and repo.head_is_unborn:
            target = repo.references["HEAD"].target
            branch = str(target).removeprefix("refs/heads/")
        self.branch = branch
        self.description = f"{repo.workdir or repo.path} ({branch or 'HEAD'})"
        self._tree = TreeCache()

    def fetch(self) -> str:
        ref = f"refs/heads/{self.branch}" if self.branch else "HEAD"
        try:
            target = self.repo.revparse_single(ref).peel(pygit2.Commit).id
        except (KeyError, pygit2.GitError) as exc:
            raise SourceUnavailable(f"{self.description}: {ref} does not name a commit yet") from exc
        return str(target)

    def snapshot(self, revision: str) -> Snapshot:
        return read_incrementally(self.repo, revision, self._settings, self.description, self._tree)

    def verify(self, revision: str, signers: Signers) -> str:
        return verify_commit(self.repo, revision, signers)

    def close(self) -> None:
        self.repo.free()


# -- plain directory ----------------------------------------------------------------------------


class DirectorySource:
    """A directory that is not a git repository, served as it is on disk (development)."""

    def __init__(self, root: Path, subdir: str = "") -> None:
        self.root = root / subdir if subdir else root
        self.local: Path | None = self.root
        self.description = f"{self.root} (directory)"
        self._last: Snapshot | None = None

    def fetch(self) -> str:
        try:
            self._last = read_directory(self.root)
        except OSError as exc:
            raise SourceUnavailable(f"{self.root}: {exc}") from exc
        return self._last.revision

    def snapshot(self, revision: str) -> Snapshot:
        if self._last is None or self._last.revision != revision:
            self.fetch()
        assert self._last is not None
        return self._last

    def verify(self, revision: str, signers: Signers) -> str:
        message = f"{self.root}: a plain directory has no commits to verify (--verify-commits needs a git repository)"
        raise invalid_commit(message)

    def close(self) -> None:
        return None


def print_progress(line: str) -> None:
    """A progress callback for terminals: one line rewritten in place."""
    sys.stderr.write("\r" + line + "\x1b[K")
    sys.stderr.flush()
