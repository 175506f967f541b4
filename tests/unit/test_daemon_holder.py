"""GenerationHolder: the served generation, retained ones, and generations read back from disk on demand."""

from __future__ import annotations

import threading
from ipaddress import IPv4Address

from reconciler.core.model import DesiredState, Site
from reconciler.generation import Generation, GenerationHolder


def gen(revision: str) -> Generation:
    state = DesiredState(revision, Site(IPv4Address("10.0.0.1")), (), {}, (), {})
    return Generation(revision, state, {"boot.ipxe": revision.encode()})


class Disk:
    """A loader over a set of revisions 'on disk', counting reads."""

    def __init__(self, *revisions: str) -> None:
        self.on_disk = set(revisions)
        self.reads: list[str] = []

    def __call__(self, revision: str) -> Generation | None:
        self.reads.append(revision)
        return gen(revision) if revision in self.on_disk else None


def test_a_miss_is_read_through_the_loader_once_and_cached() -> None:
    disk = Disk("a", "b")
    holder = GenerationHolder(disk)
    holder.swap(gen("b"))
    assert holder.get("b") is holder.current()  # the current one never goes to disk
    first = holder.get("a")
    assert first is not None and first.file("boot.ipxe") == b"a"
    assert holder.get("a") is first
    assert disk.reads == ["a"]
    assert holder.get("gone") is None and holder.get("gone") is None
    assert disk.reads == ["a", "gone", "gone"]  # unknown stays unknown (and is not cached)
    assert set(holder.retained()) == {"a", "b"}


def test_without_a_loader_only_memory_answers() -> None:
    holder = GenerationHolder()
    holder.swap(gen("b"))
    assert holder.get("a") is None


def test_loaded_generations_are_bounded_least_recently_used_first() -> None:
    disk = Disk("a", "b", "c", "d")
    holder = GenerationHolder(disk, max_loaded=2)
    holder.swap(gen("d"))
    holder.get("a")
    holder.get("b")
    holder.get("a")  # a is now the most recent
    holder.get("c")  # drops b
    assert set(holder.retained()) == {"d", "a", "c"}
    assert holder.get("b") is not None
    assert disk.reads == ["a", "b", "c", "b"]


def test_retain_only_forgets_loaded_ones_and_swap_supersedes_a_loaded_one() -> None:
    disk = Disk("a", "b", "c")
    holder = GenerationHolder(disk)
    holder.swap(gen("c"))
    holder.get("a")
    holder.get("b")
    disk.on_disk.discard("a")  # collected
    holder.retain_only(["b", "c"])
    assert holder.get("a") is None
    assert holder.get("b") is not None and disk.reads.count("b") == 1
    activated = gen("b")
    holder.swap(activated)  # a revert to b: the activated one is what get() answers
    assert holder.get("b") is activated


def test_concurrent_misses_for_one_revision_read_it_once() -> None:
    gate = threading.Event()
    reads: list[str] = []

    def slow(revision: str) -> Generation | None:
        reads.append(revision)
        gate.wait(5)
        return gen(revision)

    holder = GenerationHolder(slow)
    results: list[Generation | None] = []
    threads = [threading.Thread(target=lambda: results.append(holder.get("a"))) for _ in range(8)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(5)
    assert reads == ["a"]
    assert len(results) == 8 and all(r is results[0] for r in results)


def test_a_loader_that_raises_answers_none() -> None:
    def broken(revision: str) -> Generation | None:
        raise OSError("disk on fire")

    holder = GenerationHolder(broken)
    assert holder.get("a") is None
