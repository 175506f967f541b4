"""`ArtifactStore.write` with its shortcuts (links to the previous generation, recycled inodes) writes
what a full write of the same generation writes: the same paths, bytes and modes.

The generations are real renders of example-repo's site with a render memo (stamped entries, as the
daemon holds them), written one after the other with the previous one and old ones collected in
between (`--keep-generations 1`: every write after the second takes inodes from the pool), and
once after a writer process was killed (-9) in the middle of a write."""

from __future__ import annotations

import dataclasses
import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

from reconciler.adapters.artifacts import ArtifactStore, StoredGeneration
from reconciler.adapters.dirsource import read_directory
from reconciler.core.render import NodeMemo, render_generation
from reconciler.core.render.files import RenderedFiles
from reconciler.core.secrets import private_paths
from reconciler.core.validate import validate

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"report-secret"
META = {"report-key": b"fingerprint"}
PROFILES = ("ubuntu-2204-install", "local-disk", "ubuntu-2404-install")  # the first two name a secret

Tree = dict[str, tuple[bytes, int]]


def snapshot_files(nodes: int, round_: int) -> dict[str, bytes]:
    """example-repo with `nodes` nodes; `round_` changes some of them (a label, a profile, one gone)."""
    files = {p: b for p, b in read_directory(ROOT / "example-repo").files.items() if not p.startswith("nodes/")}
    for i in range(nodes):
        if round_ % 4 == 3 and i == round_ % nodes:
            continue  # removed this round
        profile = PROFILES[(i + (round_ if i % 5 == 0 else 0)) % len(PROFILES)]  # every 5th moves around
        label = f"r{round_}" if i == round_ % nodes else "steady"
        files[f"nodes/n{i:03d}.yaml"] = (
            f"mac: 52:54:00:00:01:{i:02x}\nip: 10.10.10.{210 + i}\nprofile: {profile}\nlabels: {{change: {label}}}\n"
            "metadata:\n  ssh_authorized_keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx8 ops@lab.example]\n"
        ).encode()
    return files


def render(files: dict[str, bytes], revision: str, memo: NodeMemo) -> tuple[RenderedFiles, frozenset[str]]:
    base = read_directory(ROOT / "example-repo")
    state = validate(dataclasses.replace(base, revision=revision, files=files)).state
    assert state is not None
    return render_generation(state, SECRET, memo=memo), private_paths(state)


def tree(root: Path) -> Tree:
    out: Tree = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = (path.read_bytes(), stat.S_IMODE(path.lstat().st_mode))
    return out


def full_write(work: Path, revision: str, files: Mapping[str, bytes], source: Mapping[str, bytes],
               private: frozenset[str]) -> Tree:
    """What a write with no previous generation and no recycled inodes gives."""
    store = ArtifactStore(work / f"full-{revision}")
    store.prepare()
    return tree(store.write(revision, dict(files), source, meta=META, private=private))


def revision_of(n: int) -> str:
    return f"{n:040x}"


def test_each_write_is_what_a_full_write_gives(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "state")
    store.prepare()
    memo, previous = NodeMemo(), None
    for n in range(8):
        revision, source = revision_of(n), snapshot_files(12, n)
        files, private = render(source, revision, memo)
        root = store.write(revision, files, source, previous=previous, meta=META, private=private)
        store.swap_current(revision)
        assert private
        assert tree(root) == full_write(tmp_path, revision, files, source, private), f"round {n}"
        previous = StoredGeneration(revision, root, files, source, META)
        store.collect(1, referenced={revision})


def test_a_file_whose_bytes_did_not_change_is_a_link_and_a_stamped_one_is_written(tmp_path: Path) -> None:
    """Unchanged site-wide and revision-free files are shared with the previous generation; a node file
    kept as the same stored entry but carrying the revision is written again (its bytes differ)."""
    store = ArtifactStore(tmp_path / "state")
    store.prepare()
    memo = NodeMemo()
    source_a, source_b = snapshot_files(12, 0), snapshot_files(12, 1)
    files_a, private_a = render(source_a, revision_of(0), memo)
    root_a = store.write(revision_of(0), files_a, source_a, meta=META, private=private_a)
    files_b, private_b = render(source_b, revision_of(1), memo)
    root_b = store.write(revision_of(1), files_b, source_b, meta=META, private=private_b,
                         previous=StoredGeneration(revision_of(0), root_a, files_a, source_a, META))
    kept = [p for p, e in files_b.entries.items() if not isinstance(e, bytes) and files_a.entries.get(p) is e]
    assert kept, "the memo kept no node: nothing here tests stamped entries"
    for path in files_b:
        shared = (root_a / path).exists() and os.path.samefile(root_a / path, root_b / path)
        assert shared == (files_a.get(path) == files_b[path] and path not in private_b), path
    assert os.path.samefile(root_a / ".source/netboot.yaml", root_b / ".source/netboot.yaml")


def test_a_recycled_private_inode_never_gives_a_public_file_its_mode(tmp_path: Path) -> None:
    """Collected generations' files are reused; one that held a secret (0600) is reused only for
    another private file (before: a public file written into it stayed 0600, unreadable to others)."""
    store = ArtifactStore(tmp_path / "state")
    store.prepare()
    previous = None
    rounds: list[tuple[dict[str, bytes], frozenset[str]]] = [
        ({"a": b"1", "cloud-init/x/user-data": b"secret 1"}, frozenset({"cloud-init/x/user-data"})),
        ({"a": b"2", "cloud-init/x/user-data": b"secret 2"}, frozenset({"cloud-init/x/user-data"})),
        ({"a": b"3", "b": b"public b", "c": b"public c"}, frozenset()),
        ({"a": b"4", "b": b"public b2", "cloud-init/y/user-data": b"secret 3"}, frozenset({"cloud-init/y/user-data"})),
    ]
    for n, (files, private) in enumerate(rounds):
        revision = revision_of(n)
        root = store.write(revision, files, {}, previous=previous, meta=META, private=private)
        store.swap_current(revision)
        assert tree(root) == full_write(tmp_path, revision, files, {}, private), f"round {n}"
        previous = StoredGeneration(revision, root, files, {}, META)
        store.collect(1, referenced={revision})


def test_a_file_private_before_is_not_linked_into_a_generation_where_it_is_public(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "state")
    store.prepare()
    files = {"cloud-init/x/user-data": b"same bytes"}
    root_a = store.write(revision_of(0), files, {}, meta=META, private=frozenset(files))
    for previous_files in (files, store.load(revision_of(0)).files):  # as written, as read back
        revision = revision_of(len(store.stored()))
        root_b = store.write(revision, files, {}, meta=META,
                             previous=StoredGeneration(revision_of(0), root_a, previous_files, {}, META))
        assert tree(root_b) == full_write(tmp_path, revision, files, {}, frozenset())


KILLED_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from reconciler.adapters import artifacts
    from tests.unit import test_artifacts_write as t

    state, stop_after = Path(sys.argv[1]), int(sys.argv[2])
    store = artifacts.ArtifactStore(state)
    store.prepare()
    memo, previous = t.NodeMemo(), None
    written = 0
    real = artifacts.ArtifactStore._write_file

    def counting(self, *args, **kwargs):
        global written
        written += n == 3
        if written == stop_after:
            print("stopped", flush=True)
            sys.stdin.read()  # killed here, in the middle of round 3's write
        return real(self, *args, **kwargs)

    artifacts.ArtifactStore._write_file = counting
    for n in range(4):
        revision, source = t.revision_of(n), t.snapshot_files(12, n)
        files, private = t.render(source, revision, memo)
        root = store.write(revision, files, source, previous=previous, meta=t.META, private=private)
        store.swap_current(revision)
        previous = artifacts.StoredGeneration(revision, root, files, source, t.META)
        store.collect(1, referenced={revision})
    """)


def test_after_a_kill_9_in_the_middle_of_a_write_the_next_writes_are_whole(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # Rounds 0-2 write 12 nodes' files each; round 3 is killed part of the way through, writing
    # into recycled inodes (round 0 was collected).
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(state), "20"], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "stopped\n"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert any(p.name.endswith(".tmp") for p in (state / "generations").iterdir()), "not killed mid-write"

    store = ArtifactStore(state)
    store.prepare()
    loaded = store.load_current()
    assert loaded is not None
    memo = NodeMemo()
    for n in range(int(loaded.revision, 16) + 1):  # what was on disk, rendered again
        source = snapshot_files(12, n)
        files, private = render(source, revision_of(n), memo)
        if n == int(loaded.revision, 16):
            assert tree(loaded.root) == full_write(tmp_path, revision_of(n), files, source, private)
    previous = loaded
    for n in range(int(loaded.revision, 16) + 1, 7):
        revision, source = revision_of(n), snapshot_files(12, n)
        files, private = render(source, revision, memo)
        root = store.write(revision, files, source, previous=previous, meta=META, private=private)
        store.swap_current(revision)
        assert tree(root) == full_write(tmp_path, revision, files, source, private), f"round {n}"
        previous = StoredGeneration(revision, root, files, source, META)
        store.collect(1, referenced={revision})


def test_spares_left_by_an_earlier_version_are_told_apart_by_their_mode(tmp_path: Path) -> None:
    """recycle/f<n> (before private and public spares were kept apart) may hold a secret's 0600 inode:
    a public file written into it after an upgrade would stay 0600."""
    state = tmp_path / "state"
    (state / "recycle").mkdir(parents=True)
    for n, mode in enumerate((0o600, 0o644, 0o600)):
        spare = state / "recycle" / f"f{n}"
        spare.write_bytes(b"an old file")
        spare.chmod(mode)
    store = ArtifactStore(state)
    store.prepare()
    files = {"a": b"public a", "b": b"public b", "c": b"public c", "cloud-init/x/user-data": b"secret"}
    root = store.write(revision_of(0), files, {}, meta=META, private=frozenset({"cloud-init/x/user-data"}))
    assert tree(root) == full_write(tmp_path, revision_of(0), files, {}, frozenset({"cloud-init/x/user-data"}))
