"""`/report` against hostile bodies, with real HTTP requests to the daemon's wiring (issue 21 item 6).

The address and a header or query token are checked before a body is read; a body is parsed,
bounded in size and JSON nesting, only for a report they admit (or to find a `token` field in
it); anything unreadable is a 400 with a JSON reason, never a 500 with a traceback.
"""

from __future__ import annotations

import http.client
import json
import logging

import pytest

from reconciler.core import template
from reconciler.servers import http_results
from tests.integration import test_results
from tests.integration.test_results import IPS, MACS, SECRET, STRANGER, Reply, Site, request

MAC = MACS["node-1"]
NODE = IPS["node-1"]
NESTED = b"[" * 100_000 + b"]" * 100_000

site = test_results.site  # the fixture: test_results.py's daemon wiring, closed after the test


def post(site: Site, body: bytes, *, source: str = NODE, path: str = f"/report/{MAC}",
         content_type: str = "application/json", **headers: str) -> Reply:
    return request(site.port, "POST", path, source=source, body=body,
                   headers={"Content-Type": content_type, **headers})


def refused_with_400(reply: Reply) -> str:
    assert reply.status == 400, (reply.status, reply.body[:200])
    reason = reply.json()["error"]
    assert isinstance(reason, str) and reason
    return reason


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (NESTED, "application/json"),  # a RecursionError in json.loads
        (b'{"status": {"a": ' * 5000 + b"1" + b"}" * 5001, "application/json"),
        (b'{"status": ' + b"9" * 10_000 + b"}", "application/json"),  # past int's digit limit
        (b"\xff\xfe\x00garbage\x80", "application/json"),
        (b"\xff\xfe\x00garbage\x80", "application/x-www-form-urlencoded"),
        (b'["not", "an", "object"]', "application/json"),
        (b'{"status": "success"', "application/json"),
    ],
)
def test_an_unreadable_body_from_the_node_is_a_400_not_a_500(
    site: Site, body: bytes, content_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        refused_with_400(post(site, body, content_type=content_type))
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    # The server still takes a good report afterwards.
    assert post(site, b'{"status": "success"}').status == 200


def test_a_strangers_body_is_not_parsed_without_a_header_or_query_token(site: Site) -> None:
    # A stranger's deep nesting is refused like its report would be: the body is only looked at for
    # a token, under the same bounds.
    reply = post(site, NESTED, source=STRANGER)
    assert reply.status in (400, 403) and "error" in reply.json()
    # With a good token in the query the stranger's report is read; its unreadable body is a 400.
    token = template.report_token(SECRET, "node-1", site.sha)
    refused_with_400(post(site, NESTED, source=STRANGER, path=f"/report/{MAC}?token={token}"))
    # A token in the body is still honoured (README: "a `token` field in the body").
    ok = post(site, json.dumps({"status": "success", "token": token}).encode(), source=STRANGER)
    assert ok.status == 200, ok.body


def test_a_body_over_the_bound_is_refused_before_it_is_parsed(site: Site) -> None:
    big = json.dumps({"status": "success", "message": "x" * (http_results.MAX_REPORT_BYTES + 1)}).encode()
    assert post(site, big).status == 413
    # Chunked (no Content-Length): read only up to the bound, then refused the same way.
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10, source_address=(NODE, 0))
    try:
        conn.request("POST", f"/report/{MAC}", body=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]),
                     headers={"Content-Type": "application/json"}, encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 413, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("length", ["abc", "-5", "1e3"])
def test_a_malformed_content_length_is_a_400(site: Site, length: str) -> None:
    # Sent raw: http.client will not send a wrong Content-Length.
    import socket

    with socket.create_connection(("127.0.0.1", site.port), timeout=10, source_address=(NODE, 0)) as sock:
        sock.sendall(f"POST /report/{MAC} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
                     "Content-Type: application/json\r\nConnection: close\r\n\r\n{}".encode())
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.split(b" ", 2)[1] == b"400", reply[:200]
