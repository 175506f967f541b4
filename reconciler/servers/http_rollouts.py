"""/api/rollouts: the rollouts as JSON, and the operator's pause and resume, as a WSGI app.

Built by the daemon's run command (`make_rollouts_app(...)`) over the rollout runner's callables
and mounted on the boot HTTP server beside /api (the longer prefix wins). No policy lives here.
- `GET /api/rollouts`: `{"current": <rollout or null>, "history": [<rollout>, ...]}` (newest first).
- `POST /api/rollouts/pause` and `POST /api/rollouts/resume`: operator actions. The body
  `{"action": "pause"|"resume", "time": <epoch seconds>, "reason": "..."}` is signed with the
  `--webhook-secret-file` secret (`X-Signature: sha256=<hex HMAC-SHA256>`, as
  `netboot-reconcile rollout` sends it). The secret is the push webhook's, so what a push
  carries must not work here: GitHub's and GitLab's headers are refused (a push delivery
  replayed here would resume a rollout, and GitLab sends the secret itself), the signed action
  must be this endpoint's, its time within `WINDOW` seconds of the daemon's clock, and a
  signature is taken once (a request replayed within the window is refused). Without a
  configured secret 403; a missing, wrong, stale, replayed or other action's signature 401.
  409 when there is no running rollout, or this instance only follows its site's rollouts (a
  shared store, another instance runs them); else 200 with the rollout.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from reconciler.servers.http_control import WsgiApp, _json, verify_webhook

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
WINDOW = 300.0  # seconds a signed action is good for, either side of the daemon's clock
Doc = Mapping[str, Any]


class _Used:
    """Signatures taken within the window: a request is acted on once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}

    def take(self, signature: str, now: float) -> bool:
        with self._lock:
            self._seen = {s: t for s, t in self._seen.items() if now - t <= 2 * WINDOW}
            if signature in self._seen:
                return False
            self._seen[signature] = now
            return True


def _refusal(action: str, headers: Mapping[str, str], body: bytes, secret: bytes, now: float) -> str | None:
    """Why a signed operator action is refused (None: it is not): see the module docstring."""
    if "x-signature" not in headers or verify_webhook({"x-signature": headers["x-signature"]}, body, secret) is None:
        return "missing or invalid signature (X-Signature: sha256=<HMAC-SHA256 of the body>)"
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("action") != action:
        return f"the signed body is not a {action} (it must say \"action\": \"{action}\")"
    signed = doc.get("time")
    if not isinstance(signed, int | float) or isinstance(signed, bool) or abs(now - signed) > WINDOW:
        return (f"the signed time is not within {WINDOW:g} s of the daemon's clock "
                "(a replayed request, or clocks that differ)")
    return None


def make_rollouts_app(
    *,
    current: Callable[[], Doc | None],
    history: Callable[[], list[Doc]],
    pause: Callable[[str], Doc | None],
    resume: Callable[[], Doc | None],
    secret: bytes | None,
    clock: Callable[[], float] = time.time,
) -> WsgiApp:
    used = _Used()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = (environ.get("PATH_INFO") or "/").rstrip("/")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/api/rollouts":
            if method not in ("GET", "HEAD"):
                return _json(start_response, "405 Method Not Allowed", {"error": "GET only"})
            return _json(start_response, "200 OK", {"current": current(), "history": history()})
        action = path.removeprefix("/api/rollouts/")
        if action not in ("pause", "resume"):
            return _json(start_response, "404 Not Found", {"error": f"no such endpoint {path}"})
        if method != "POST":
            return _json(start_response, "405 Method Not Allowed", {"error": "POST only"})
        if not secret:
            return _json(start_response, "403 Forbidden",
                         {"error": "rollout pause and resume are disabled: the daemon has no --webhook-secret-file"})
        try:
            length = int(environ.get("CONTENT_LENGTH") or "0")
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            return _json(start_response, "413 Content Too Large", {"error": f"body over {MAX_BODY} bytes"})
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")}
        client = environ.get("REMOTE_ADDR", "?")
        now = clock()
        refused = _refusal(action, headers, body, secret, now)
        if refused is None and not used.take(headers["x-signature"].strip().lower(), now):
            refused = "this signed request was already used (a replay)"
        if refused is not None:
            log.warning("rollout %s from %s refused: %s", action, client, refused)
            return _json(start_response, "401 Unauthorized", {"error": refused})
        reason = str(json.loads(body).get("reason", ""))
        before = current()
        if before is None or before.get("state") in ("done", "failed", "superseded"):
            return _json(start_response, "409 Conflict", {"error": "no running rollout", "current": before})
        log.info("rollout %s by an operator from %s%s", action, client, f": {reason}" if reason else "")
        try:
            after = pause(reason[:500] or f"paused by an operator ({client})") if action == "pause" else resume()
        except LookupError as exc:  # this instance does not run its site's rollouts
            return _json(start_response, "409 Conflict", {"error": str(exc), "current": before})
        return _json(start_response, "200 OK", {"current": after})

    return app
