"""The Prometheus metrics of one daemon, in its own registry (several daemons may share a process).

Built by `Daemon`; served by the control app's `/metrics` (servers.http_control); the results
recorder (servers.http_results) registers its own series in the same registry.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reconciler.daemon.outcome import Result


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.duration = Histogram(
            "netboot_reconcile_duration_seconds",
            "Time spent in one reconcile attempt",
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.total = Counter("netboot_reconcile", "Reconcile attempts by result", ["result"], registry=self.registry)
        for result in (Result.APPLIED, Result.REJECTED, Result.FAILED):  # every series from the start, at 0
            self.total.labels(result=str(result))
        self.info = Gauge("netboot_info", "The revision being served (value 1)", ["revision"], registry=self.registry)
        self._revision: str | None = None

    def served(self, revision: str) -> None:
        if self._revision is not None and self._revision != revision:
            with contextlib.suppress(KeyError):
                self.info.remove(self._revision)
        self.info.labels(revision=revision).set(1)
        self._revision = revision

    def concluded(self, result: Result, duration: float) -> None:
        self.total.labels(result=str(result)).inc()
        self.duration.observe(duration)
