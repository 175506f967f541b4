"""daemon.supervisor: a server added while the retry loop runs is started once, by `add`.

The retry loop (running because another server failed to start) used to see a slot `add` had
registered but not yet started, start it itself, and `add` then started it a second time: HTTP
bound its port twice and the daemon exited 2 with "[Errno 98] http on ...: not serving"
(tests/integration/test_daemon_health.py failed so once). The servers here are stand-ins that
count their starts: the race is in the supervisor's bookkeeping, not in any socket.
"""

from __future__ import annotations

import errno
import threading
import time

from reconciler.daemon.supervisor import Supervisor
from reconciler.servers.health import Health


class Server:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.starts = fail, 0

    def start(self) -> None:
        self.starts += 1
        if self.fail or self.starts > 1:
            raise OSError(errno.EADDRINUSE, "Address already in use")

    def health(self) -> Health:
        return Health(serving=self.starts == 1 and not self.fail, address="127.0.0.1:1")

    def stop(self, timeout: float = 0.0) -> None:
        pass


def test_a_server_added_while_the_retry_loop_runs_is_started_once() -> None:
    sup = Supervisor()
    sup.add("tftp", Server(fail=True))  # fails: the retry loop runs from now on
    http = Server()
    with sup._lock:  # what the retry loop does on its turn, done here while `add` waits for the lock
        adding = threading.Thread(target=sup.add, args=("http", http), kwargs={"fatal": True})
        adding.start()
        time.sleep(0.2)  # lets `add` do whatever it does before it takes the lock
        for slot in list(sup.slots.values()):
            if slot.server is not None and not slot.started:
                sup._start(slot)
    adding.join(10)
    sup.stop_all(1.0)
    assert http.starts == 1
