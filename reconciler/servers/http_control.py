"""The daemon's control endpoints as WSGI apps: /status, /healthz, /readyz, /metrics and /hooks/git.

Built by the daemon's run command (`make_control_apps(...)`) and mounted on the boot HTTP
server through `make_boot_app(..., extra={prefix: app})`. No policy lives here: the apps read
status through callables and turn a verified push webhook into `trigger("webhook")`; the
daemon always fetches from git itself (a webhook body is never trusted for content).

Webhook verification (constant-time compares, body size bounded, POST only):
- GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` (no SHA-1 fallback);
- GitLab: `X-Gitlab-Token: <secret>`;
- generic: `X-Signature: sha256=<hex HMAC-SHA256 of the body>`.
Without a configured secret the webhook answers 403: an unauthenticated trigger is not offered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
MAX_WEBHOOK_BYTES = 4 * 1024 * 1024


def _respond(start_response: Callable[..., Any], status: str, body: bytes, content_type: str) -> list[bytes]:
    start_response(
        status, [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
    )
    return [body]


def _json(start_response: Callable[..., Any], status: str, doc: Any) -> list[bytes]:
    return _respond(
        start_response, status, (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode(), "application/json"
    )


def status_app(status: Callable[[], Mapping[str, Any]]) -> WsgiApp:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _json(start_response, "405 Method Not Allowed", {"error": "GET only"})
        return _json(start_response, "200 OK", status())

    return app


def healthz_app(healthy: Callable[[], bool]) -> WsgiApp:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if healthy():
            return _respond(start_response, "200 OK", b"ok\n", "text/plain; charset=utf-8")
        return _respond(
            start_response, "503 Service Unavailable", b"no valid generation served yet\n", "text/plain; charset=utf-8"
        )

    return app


def readyz_app(ready: Callable[[], bool], status: Callable[[], Mapping[str, Any]]) -> WsgiApp:
    """200 only while every server the served generation needs is bound and answering; 503 says why."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if ready():
            return _respond(start_response, "200 OK", b"ready\n", "text/plain; charset=utf-8")
        doc = status()
        lines = [str(c.get("message") or c.get("reason")) for c in doc.get("conditions", ())
                 if c.get("type") == "Degraded"] or [str(doc.get("message") or "no valid generation served yet")]
        body = ("not ready: " + "\n".join(lines) + "\n").encode()
        return _respond(start_response, "503 Service Unavailable", body, "text/plain; charset=utf-8")

    return app


def metrics_app(registry: CollectorRegistry) -> WsgiApp:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return _respond(start_response, "200 OK", generate_latest(registry), CONTENT_TYPE_LATEST)

    return app


def verify_webhook(headers: Mapping[str, str], body: bytes, secret: bytes) -> str | None:
    """Which scheme authenticated this request (github, gitlab, generic), or None."""
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    github = headers.get("x-hub-signature-256")
    if github is not None:
        return "github" if hmac.compare_digest(github.strip().lower().encode(), expected.encode()) else None
    gitlab = headers.get("x-gitlab-token")
    if gitlab is not None:
        return "gitlab" if hmac.compare_digest(gitlab.encode(), secret) else None
    generic = headers.get("x-signature")
    if generic is not None:
        return "generic" if hmac.compare_digest(generic.strip().lower().encode(), expected.encode()) else None
    return None


def webhook_app(trigger: Callable[[str], None], secret: bytes | None, max_bytes: int = MAX_WEBHOOK_BYTES) -> WsgiApp:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return _json(start_response, "405 Method Not Allowed", {"error": "POST only"})
        if not secret:
            return _json(start_response, "403 Forbidden", {"error": "webhook disabled: no --webhook-secret-file"})
        try:
            length = int(environ.get("CONTENT_LENGTH") or "-1")
        except ValueError:
            length = -1
        if length < 0:
            return _json(start_response, "411 Length Required", {"error": "Content-Length required"})
        if length > max_bytes:
            return _json(start_response, "413 Content Too Large", {"error": f"body over {max_bytes} bytes"})
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")}
        scheme = verify_webhook(headers, body, secret)
        client = environ.get("REMOTE_ADDR", "?")
        if scheme is None:
            has_sha1_only = "x-hub-signature" in headers and "x-hub-signature-256" not in headers
            log.warning(
                "webhook from %s refused: %s",
                client,
                "SHA-1 signatures are not accepted" if has_sha1_only else "missing or wrong signature",
            )
            return _json(start_response, "401 Unauthorized", {"error": "missing or invalid signature"})
        log.info(
            "webhook from %s accepted (%s, event %s)",
            client,
            scheme,
            headers.get("x-github-event") or headers.get("x-gitlab-event") or "-",
        )
        trigger("webhook")
        return _json(start_response, "202 Accepted", {"triggered": True})

    return app


def make_control_apps(
    *,
    status: Callable[[], Mapping[str, Any]],
    healthy: Callable[[], bool],
    ready: Callable[[], bool],
    registry: CollectorRegistry,
    trigger: Callable[[str], None],
    webhook_secret: bytes | None,
) -> dict[str, WsgiApp]:
    """The apps by the path prefix they are mounted at."""
    return {
        "/status": status_app(status),
        "/healthz": healthz_app(healthy),
        "/readyz": readyz_app(ready, status),
        "/metrics": metrics_app(registry),
        "/hooks/git": webhook_app(trigger, webhook_secret),
    }
