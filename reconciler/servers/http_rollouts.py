"""/api/rollouts: the rollouts as JSON, and the operator's pause and resume, as a WSGI app.

Built by the daemon's run command (`make_rollouts_app(...)`) over the rollout runner's callables
and mounted on the boot HTTP server beside /api (the longer prefix wins). No policy lives here.
- `GET /api/rollouts`: `{"current": <rollout or null>, "history": [<rollout>, ...]}` (newest first).
- `POST /api/rollouts/pause` (body `{"reason": "..."}`, optional) and `POST /api/rollouts/resume`:
  operator actions, protected as the push webhook is (`http_control.verify_webhook`): the body
  signed with the `--webhook-secret-file` secret (`X-Signature: sha256=<hex HMAC-SHA256>`, or
  GitHub's / GitLab's header); without a configured secret they answer 403, with a missing or
  wrong signature 401. 409 when there is no running rollout; else 200 with the rollout.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from reconciler.servers.http_control import WsgiApp, _json, verify_webhook

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
Doc = Mapping[str, Any]


def make_rollouts_app(
    *,
    current: Callable[[], Doc | None],
    history: Callable[[], list[Doc]],
    pause: Callable[[str], Doc | None],
    resume: Callable[[], Doc | None],
    secret: bytes | None,
) -> WsgiApp:
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
        if verify_webhook(headers, body, secret) is None:
            log.warning("rollout %s from %s refused: missing or wrong signature", action, client)
            return _json(start_response, "401 Unauthorized", {"error": "missing or invalid signature"})
        reason = ""
        if body:
            try:
                doc = json.loads(body)
            except ValueError:
                return _json(start_response, "400 Bad Request", {"error": "the body is not JSON"})
            reason = str(doc.get("reason", "")) if isinstance(doc, dict) else ""
        before = current()
        if before is None or before.get("state") in ("done", "failed", "superseded"):
            return _json(start_response, "409 Conflict", {"error": "no running rollout", "current": before})
        log.info("rollout %s by an operator from %s%s", action, client, f": {reason}" if reason else "")
        after = pause(reason[:500] or f"paused by an operator ({client})") if action == "pause" else resume()
        return _json(start_response, "200 OK", {"current": after})

    return app
