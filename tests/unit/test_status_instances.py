"""`netboot-reconcile status` on an instance sharing its store: every instance and what it serves."""

from __future__ import annotations

from reconciler.commands.status import format_status


def test_status_lists_every_instance_of_a_shared_store_and_which_one_answered() -> None:
    doc = {"condition": "Ready", "reason": "Succeeded", "instance": "b", "instances": [
        {"name": "a", "revision": "a" * 40, "since": 100.0, "seen": 200.0},
        {"name": "b", "revision": "b" * 40, "since": 150.0, "seen": 210.0},
    ]}
    text = format_status(doc)
    lines = [line for line in text.splitlines() if line.startswith("  a ") or line.startswith("  b ")]
    assert lines[0].split()[:3] == ["a", "serving", "a" * 12] and "(this one)" not in lines[0]
    assert lines[1].split()[:3] == ["b", "serving", "b" * 12] and lines[1].endswith("(this one)")


def test_status_of_a_lone_instance_does_not_list_instances() -> None:
    doc = {"condition": "Ready", "instance": "a", "instances": [{"name": "a", "revision": "r", "since": 1.0,
                                                               "seen": 2.0}]}
    assert "instances:" not in format_status(doc)
