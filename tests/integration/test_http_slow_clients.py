"""servers.http against slow clients: a flood of connections trickling their headers from one
address must not shut out the clients of another address (issue 21, item 5).

Real sockets on loopback: the flood comes from 127.0.0.1, the other clients from 127.0.0.2
(both are this host's; Linux routes all of 127.0.0.0/8 to lo).
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time

from reconciler.core.events import DiscardEvents
from reconciler.generation import GenerationHolder
from reconciler.servers.http import HttpServer, make_boot_app

FLOOD = 300
TRICKLE_SECONDS = 10
# Never complete: a header line longer than the bytes trickled in the test.
HEAD = b"GET / HTTP/1.1\r\nHost: flood\r\nX-Slow: " + b"a" * 64


class Flood:
    """FLOOD connections from 127.0.0.1, each sending one more header byte every second."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.socks: list[socket.socket] = []
        for _ in range(FLOOD):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sock.connect(address)  # completes in the kernel's backlog even when nobody accepts
            sock.setblocking(False)
            self.socks.append(sock)
        self.closed: set[int] = set()  # indexes of connections the server closed
        self.answers: list[bytes] = []

    def tick(self, offset: int) -> None:
        for index, sock in enumerate(self.socks):
            if index in self.closed:
                continue
            try:
                sock.send(HEAD[offset : offset + 1])
            except OSError:
                self.closed.add(index)
        self.reap()

    def reap(self) -> None:
        readable, _, _ = select.select([s for i, s in enumerate(self.socks) if i not in self.closed], [], [], 0)
        for sock in readable:
            index = self.socks.index(sock)
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if data:
                self.answers.append(data)
                # the 503 then the close: read the end
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
            if not data:
                self.closed.add(index)

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def test_a_slow_header_flood_from_one_address_leaves_other_addresses_served() -> None:
    # waitress alone: the flood takes all `connection_limit` connections, each kept alive by a
    # byte a second (channel_timeout is reset by every byte), and nobody else is served.
    app = make_boot_app(GenerationHolder(), DiscardEvents(), None)
    server = HttpServer(("127.0.0.1", 0), app, connection_limit=200, max_connections_per_address=50,
                        header_timeout=3.0)
    server.start()
    flood = Flood(server.address)
    served: list[int] = []
    failed: list[str] = []
    stop = threading.Event()

    def others() -> None:
        while not stop.is_set():
            conn = http.client.HTTPConnection(*server.address, timeout=8, source_address=("127.0.0.2", 0))
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                served.append(response.status)
            except OSError as exc:
                failed.append(repr(exc))
            finally:
                conn.close()
            stop.wait(0.5)

    other = threading.Thread(target=others)
    try:
        other.start()
        for second in range(TRICKLE_SECONDS):
            flood.tick(second)
            time.sleep(1)
        flood.reap()
    finally:
        stop.set()
        other.join(20)
        flood.close()
        server.stop(2)
    assert not failed, f"clients of 127.0.0.2 failed during the flood: {failed[:3]}"
    assert len(served) >= TRICKLE_SECONDS and set(served) == {200}
    # The flood is bounded in count (50 held, the rest refused at once with a 503) and in time
    # (the held ones closed for headers not complete after 3 s): every flood connection is closed.
    assert len(flood.closed) == FLOOD
    assert server.admission.refused >= FLOOD - 50
    assert server.admission.header_timeouts >= 1
    assert any(answer.startswith(b"HTTP/1.1 503 ") for answer in flood.answers)


def test_a_client_that_sends_its_headers_in_time_is_served_and_kept_alive() -> None:
    # The header deadline is for the request head only: a keep-alive connection idle between
    # requests for longer than it, and a request whose head came in pieces, are both served.
    app = make_boot_app(GenerationHolder(), DiscardEvents(), None)
    server = HttpServer(("127.0.0.1", 0), app, header_timeout=2.0)
    server.start()
    try:
        conn = http.client.HTTPConnection(*server.address, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"netboot-reconcile\n"
        time.sleep(3.5)  # idle past the header deadline, and past maintenance
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()
        with socket.create_connection(server.address, timeout=10) as sock:
            for piece in (b"GET / HT", b"TP/1.1\r\nHost: x\r\n", b"Connection: close\r\n\r\n"):
                sock.sendall(piece)
                time.sleep(0.5)
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 ")
    finally:
        server.stop(2)
