"""bench/dashboard_scale.py in its smoke mode: the pages it measures render from a store filled as
the daemon fills it (no time is asserted: speed lives in the bench's ratios)."""

from __future__ import annotations

import pytest

from bench import dashboard_scale


def test_the_dashboard_bench_runs_in_smoke_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert dashboard_scale.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert "300 nodes x 30 commits" in out
    for page in dashboard_scale.PAGES:
        assert page in out
