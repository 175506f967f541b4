"""The rollout runner: feeds `core.rollout.step` its events and carries out its actions.

Built by `loop.Daemon` (following, not running, on an instance of a shared store without
--bmc-credentials); `applied(...)` is called after a commit is activated, `pause` / `resume`
by the /api/rollouts control app, `view` / `history` by /status and /api/rollouts. The decisions
are `core.rollout`'s; here:
- the value is kept in the results store at every transition (`save_rollout`) and read back at
  start, so a rollout survives a daemon restart (a node in flight then waits for its result as
  before; one whose power cycle was cut short times out);
- a thread of its own polls each watched node's boot events (since its power cycle) every
  `poll` seconds into `Observed` events (`core.outcomes.node_result`), and ticks timeouts;
- each `PowerCycle` runs in a small pool (one-time PXE, then off and on, through `adapters.bmc`
  in a child process bounded in time, `adapters.bmcproc`), its end posted back as `PowerDone`
  / `PowerFailed`: a BMC error fails that node with the reason and nothing else. Nothing here
  ever blocks a server thread or the reconcile loop on a BMC; the credentials file is read at
  each power action and its contents never leave this module (not logged, not in the value,
  which holds only names and reasons).
- several instances of one site on a PostgreSQL store: one without --bmc-credentials only
  follows (`follow`); among those with them, the one holding the site's `driver` lock
  (`adapters.pglock`) decides and powers, the others follow, ask for the lock every poll and
  take over from the stored value when the driver lets it go (a DaemonSet gives every pod the
  same options: all of them have credentials, or none).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from reconciler.adapters import bmc as bmcs
from reconciler.adapters import bmcproc, sqldb
from reconciler.adapters.bmccreds import Credential, CredentialsError
from reconciler.adapters.bmccreds import load as load_credentials
from reconciler.core import outcomes
from reconciler.core import rollout as core
from reconciler.core.model import Bmc, BootEvent, Node, RolloutPolicy

log = logging.getLogger(__name__)

HISTORY = 20


class RolloutStore(Protocol):
    site: str

    def rollouts(self, limit: int = 20, site: str | None = None) -> list[core.Rollout]: ...

    def save_rollout(self, value: core.Rollout) -> None: ...

    def events_of_node(self, mac: str, node: str | None = None, limit: int = 5000) -> list[BootEvent]: ...


class Driver(Protocol):
    """Whether this instance drives its site's rollouts (`adapters.pglock.SiteDriver`)."""

    def held(self) -> bool: ...

    def refresh(self) -> bool: ...

    def holder(self) -> str | None: ...


# (bmc, credential) -> None, raising bmcs.BmcError; the default drives the BMC through
# adapters.bmc in a child process (adapters.bmcproc), so a client library that hangs costs a bound.
PowerCycler = Callable[[Bmc, Credential], None]


def power_cycle_once(bmc: Bmc, credential: Credential) -> None:
    bmcproc.operate(bmc, credential, "cycle", pxe_once=True)


MANUAL_EVERY = 10  # polls between two reads of the nodes that need a manual reboot


class RolloutElsewhere(LookupError):
    """Pause or resume asked of an instance that only follows its site's rollouts."""


class RolloutRunner:
    """One instance's rollouts. `follow`: another instance of the site runs them (a PostgreSQL
    store several instances share, and this one has no --bmc-credentials): this one only shows
    what that one stores, so a site's machines are never power-cycled by two daemons at once."""

    def __init__(
        self,
        store: RolloutStore,
        *,
        nodes: Callable[[], Mapping[str, Node]],
        credentials: Path | None,
        boot_timeout: float,
        clock: Callable[[], float],
        poll: float = 2.0,
        cycle: PowerCycler = power_cycle_once,
        follow: bool = False,
        driver: Driver | None = None,
    ) -> None:
        self._follow = follow
        self._store = store
        self._nodes = nodes  # the serving generation's nodes, by name
        self._credentials = credentials
        self._timeout = boot_timeout
        self._clock = clock
        self._poll = poll
        self._cycle = cycle
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="bmc")
        self._thread: threading.Thread | None = None
        self._polls = 0
        self._driver = driver
        if driver is not None:
            driver.refresh()  # the first instance of a site to start drives its rollouts
        history = store.rollouts(1, site=store.site)  # this instance's site's
        self._rollout: core.Rollout | None = history[0] if history else None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None and not self._follow:
            self._thread = threading.Thread(target=self._loop, name="rollouts", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- inputs -----------------------------------------------------------------------------------

    def applied(self, revision: str, policy: RolloutPolicy | None, previous: Sequence[outcomes.Target] | None,
                current: Sequence[outcomes.Target], nodes: Sequence[Node]) -> None:
        """A commit was activated: what it asks to reinstall, and which of its nodes can be powered."""
        if not self.driving():
            return
        wants = core.wants(previous, current, policy)
        current_rollout = self.current
        running = current_rollout is not None and not current_rollout.finished
        if not wants and not running:
            return
        why = self._unpowerable(nodes, {w.node for w in wants} | self._unfinished())
        self._apply(core.Applied(revision, policy, wants, {n.name: why.get(n.name, "") for n in nodes},
                                 self._clock()))

    def pause(self, reason: str) -> core.Rollout | None:
        self._refuse_here()
        return self._apply(core.Pause(reason, self._clock()))

    def resume(self) -> core.Rollout | None:
        self._refuse_here()
        return self._apply(core.Resume(self._clock()))

    def _refuse_here(self) -> None:
        if self._follow:
            raise RolloutElsewhere("this instance follows its site's rollouts (a shared store, no "
                                   "--bmc-credentials): pause and resume them on the instance that runs them")
        if not self.driving():
            holder = self._driver.holder() if self._driver is not None else None
            raise RolloutElsewhere(f"another instance of this site ({holder or 'unknown now'}) runs its rollouts: "
                                   "pause and resume them there")

    def driving(self) -> bool:
        """Whether this instance decides and powers (False: another instance of its site does)."""
        return not self._follow and (self._driver is None or self._driver.held())

    # -- views ------------------------------------------------------------------------------------

    @property
    def current(self) -> core.Rollout | None:
        if not self.driving():  # the running instance's, as it last stored it
            try:
                history = self._store.rollouts(1, site=self._store.site)
            except Exception:
                log.debug("rollout: the store cannot be read now", exc_info=True)
            else:
                with self._lock:
                    self._rollout = history[0] if history else None
        with self._lock:
            return self._rollout

    def view(self) -> dict[str, Any] | None:
        summary = core.summary(self.current)
        return None if summary is None else {**summary, "run_here": self.driving()}

    # -- the machinery ------------------------------------------------------------------------------

    def _unfinished(self) -> set[str]:
        r = self._rollout
        return {n.node for n in r.nodes if n.state in core.UNFINISHED} if r is not None else set()

    def _unpowerable(self, nodes: Sequence[Node], names: set[str]) -> dict[str, str]:
        """Why the daemon cannot power each of `names` ("" where it can). The file is read for
        the names only; a problem with it is said without its contents (`CredentialsError`)."""
        known: Mapping[str, Credential] | None = None
        problem = "" if self._credentials is not None else "the daemon was started without --bmc-credentials"
        if self._credentials is not None:
            try:
                known = load_credentials(self._credentials)
            except CredentialsError as exc:
                problem = str(exc)
        out = {}
        for node in nodes:
            if node.name not in names:
                continue
            if node.bmc is None:
                out[node.name] = f"no bmc: for it ({node.source.file} or a group selecting it)"
            elif known is None:
                out[node.name] = problem
            elif node.bmc.credentials not in known:
                out[node.name] = f"bmc.credentials {node.bmc.credentials!r} names no entry in {self._credentials}"
        return out

    def _apply(self, event: core.Event) -> core.Rollout | None:
        if not self.driving():
            return self.current  # another instance decides: its value is read back
        with self._lock:
            old = self._rollout
            new, actions = core.step(old, event)
            if new is old:
                return new
            if old is not None and new is not None and new.revision != old.revision and not old.superseded_by \
                    and not old.finished:
                self._save(replace(old, superseded_by=new.revision, updated=event.now))
            if new is not None:
                self._save(new)
                if old is None or new.state != old.state or new.revision != old.revision:
                    log.info("revision=%s rollout %s%s", new.revision, new.state,
                             f": {new.paused}" if new.paused else "")
            self._rollout = new
        for action in actions:
            if isinstance(action, core.PowerCycle):
                log.info("revision=%s rollout: power cycle of %s with a one-time network boot", action.revision,
                         action.node)
                self._pool.submit(self._power_cycle, action)
            else:
                self._pool.submit(self._clear_override, action)
        return new

    def _save(self, value: core.Rollout) -> None:
        try:
            self._store.save_rollout(value)
        except Exception:
            log.exception("revision=%s could not store the rollout's state", value.revision)

    def _bmc(self, name: str) -> tuple[Bmc, Credential]:
        """The node's BMC in the serving commit and its credential, read from the file now."""
        node = self._nodes().get(name)
        if node is None or node.bmc is None:
            raise bmcs.BmcError(f"node {name} has no bmc: in the serving commit")
        if self._credentials is None:
            raise bmcs.BmcError("the daemon was started without --bmc-credentials")
        try:
            credential = load_credentials(self._credentials).get(node.bmc.credentials)
        except CredentialsError as exc:
            raise bmcs.BmcError(str(exc)) from None
        if credential is None:
            raise bmcs.BmcError(f"bmc.credentials {node.bmc.credentials!r} names no entry in {self._credentials}")
        return node.bmc, credential

    def _clear_override(self, action: core.ClearBootOverride) -> None:
        try:
            bmc, credential = self._bmc(action.node)
            if bmc.driver == "redfish":  # IPMI's boot device without persist is used up by the boot
                bmcproc.operate(bmc, credential, "clear-boot-override")
        except Exception as exc:  # its next boot may netboot again: said, not fatal
            log.warning("rollout: could not clear the one-time boot setting of %s: %s", action.node,
                        exc if isinstance(exc, bmcs.BmcError) else type(exc).__name__)

    def _power_cycle(self, action: core.PowerCycle) -> None:
        try:
            bmc, credential = self._bmc(action.node)
            self._cycle(bmc, credential)
        except Exception as exc:  # a BMC error fails the node; nothing else stops
            reason = str(exc) if isinstance(exc, bmcs.BmcError) else f"{type(exc).__name__}: {exc}"
            log.warning("revision=%s rollout: power cycle of %s failed: %s", action.revision, action.node, reason)
            self._apply(core.PowerFailed(action.node, reason, self._clock()))
            return
        self._apply(core.PowerDone(action.node, self._clock()))

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._ask_driver():
                    self._observe()
            except Exception:
                log.exception("rollout: reading boot results failed")
            self._wake.wait(self._poll)
            self._wake.clear()

    def _ask_driver(self) -> bool:
        """Whether this instance runs its site's rollouts now, asking for the driver lock again;
        one that has just taken over goes on from the rollout the store holds."""
        if self._driver is None:
            return True
        was = self._driver.held()
        if not self._driver.refresh():
            return False  # `current` reads the running instance's rollout from the store
        if not was:
            try:
                history = self._store.rollouts(1, site=self._store.site)
            except sqldb.db_errors(sqldb.StoreUnreachable):
                return False  # the lock without the store: try again at the next poll
            with self._lock:
                self._rollout = history[0] if history else None
        return True

    def _observe(self) -> None:
        rollout = self.current
        if rollout is None or rollout.superseded_by or rollout.finished:
            return
        now = self._clock()
        # Nodes waiting for a manual reboot (every node of a `power: false` rollout, hundreds maybe)
        # are read every MANUAL_EVERY polls; the few in flight at each.
        self._polls += 1
        manual = self._polls % MANUAL_EVERY == 1
        for n in rollout.nodes:
            watched = n.state is core.NodeState.IN_FLIGHT or (manual and n.state is core.NodeState.MANUAL)
            if not watched or n.started is None:
                continue
            events = [e for e in self._store.events_of_node(n.mac, n.node) if e.time >= n.started]
            if not events:
                continue
            result = outcomes.node_result(events, revision=n.revision, now=now, timeout=self._timeout,
                                          mac=n.mac, node=n.node)
            if str(result.outcome) != n.outcome:
                self._apply(core.Observed(n.node, result.outcome, result.reason, now))
        self._apply(core.Tick(now, self._timeout))
