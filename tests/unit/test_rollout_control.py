"""/api/rollouts/pause and /resume act on a signed operator request once, and on nothing else.

The daemon's one secret signs push webhooks too: a push delivery (GitHub's signature, GitLab's
token header, which is the secret itself) replayed at /api/rollouts/resume resumed a paused
rollout, so its machines were powered; so did the same `rollout resume` request sent again.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from typing import Any

from reconciler.servers.http_rollouts import WINDOW, make_rollouts_app

SECRET = b"topsecret"
NOW = 1_800_000_000.0
PUSH = json.dumps({"ref": "refs/heads/main", "after": "0" * 40}).encode()


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()


def operator(action: str, time: float = NOW, reason: str = "") -> bytes:
    return json.dumps({"action": action, "time": time, "reason": reason}).encode()


class Runner:
    def __init__(self) -> None:
        self.done: list[str] = []

    def pause(self, reason: str) -> dict[str, str]:
        self.done.append(f"pause {reason}")
        return {"state": "paused"}

    def resume(self) -> dict[str, str]:
        self.done.append("resume")
        return {"state": "running"}

    def app(self) -> Any:
        return make_rollouts_app(current=lambda: {"state": "paused"}, history=list, pause=self.pause,
                                 resume=self.resume, secret=SECRET, clock=lambda: NOW)


def post(app: Any, path: str, body: bytes, headers: dict[str, str]) -> tuple[str, dict[str, Any]]:
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "wsgi.input": io.BytesIO(body),
               "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1"}
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    seen: list[str] = []
    answer = b"".join(app(environ, lambda status, _headers: seen.append(status)))
    return seen[0], json.loads(answer)


def test_a_signed_operator_request_is_acted_on_once() -> None:
    runner = Runner()
    app = runner.app()
    body = operator("resume")
    status, doc = post(app, "/api/rollouts/resume", body, {"X-Signature": sign(body)})
    assert status.startswith("200") and doc["current"] == {"state": "running"}
    status, doc = post(app, "/api/rollouts/resume", body, {"X-Signature": sign(body)})
    assert status.startswith("401") and "already used" in doc["error"]
    paused = operator("pause", reason="disk firmware")
    assert post(app, "/api/rollouts/pause", paused, {"X-Signature": sign(paused)})[0].startswith("200")
    assert runner.done == ["resume", "pause disk firmware"]


def test_a_push_delivery_replayed_at_the_rollout_endpoints_is_refused() -> None:
    runner = Runner()
    app = runner.app()
    for headers in ({"X-Hub-Signature-256": sign(PUSH)}, {"X-Signature": sign(PUSH)},
                    {"X-Gitlab-Token": SECRET.decode()}):
        for action in ("resume", "pause"):
            status, doc = post(app, f"/api/rollouts/{action}", PUSH, headers)
            assert status.startswith("401"), (headers, action, doc)
    assert runner.done == []


def test_a_request_for_another_action_or_out_of_its_time_is_refused() -> None:
    runner = Runner()
    app = runner.app()
    pause = operator("pause")
    status, doc = post(app, "/api/rollouts/resume", pause, {"X-Signature": sign(pause)})
    assert status.startswith("401") and "not a resume" in doc["error"]
    for when in (NOW - WINDOW - 1, NOW + WINDOW + 1):
        stale = operator("resume", time=when)
        status, doc = post(app, "/api/rollouts/resume", stale, {"X-Signature": sign(stale)})
        assert status.startswith("401") and "within" in doc["error"]
    untimed = json.dumps({"action": "resume"}).encode()
    assert post(app, "/api/rollouts/resume", untimed, {"X-Signature": sign(untimed)})[0].startswith("401")
    assert runner.done == []
