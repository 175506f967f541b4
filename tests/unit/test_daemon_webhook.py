"""Webhook verification: GitHub sha256, GitLab token, generic HMAC; no SHA-1; and the WSGI app's bounds."""

from __future__ import annotations

import hashlib
import hmac
import io
from typing import Any

from reconciler.servers.http_control import verify_webhook, webhook_app

SECRET = b"topsecret"
BODY = b'{"ref": "refs/heads/main"}'
SIG = "sha256=" + hmac.new(SECRET, BODY, hashlib.sha256).hexdigest()


def test_schemes() -> None:
    assert verify_webhook({"x-hub-signature-256": SIG}, BODY, SECRET) == "github"
    assert verify_webhook({"x-hub-signature-256": SIG.upper().replace("SHA256", "sha256")}, BODY, SECRET) == "github"
    assert verify_webhook({"x-gitlab-token": "topsecret"}, BODY, SECRET) == "gitlab"
    assert verify_webhook({"x-signature": SIG}, BODY, SECRET) == "generic"


def test_refusals() -> None:
    assert verify_webhook({}, BODY, SECRET) is None
    assert verify_webhook({"x-hub-signature-256": SIG}, BODY + b" ", SECRET) is None
    assert verify_webhook({"x-hub-signature-256": SIG[7:]}, BODY, SECRET) is None  # no "sha256=" prefix
    sha1 = "sha1=" + hmac.new(SECRET, BODY, hashlib.sha1).hexdigest()
    assert verify_webhook({"x-hub-signature": sha1}, BODY, SECRET) is None
    assert verify_webhook({"x-gitlab-token": "topsecre"}, BODY, SECRET) is None
    # A wrong GitHub signature is not rescued by a right GitLab token sent alongside.
    assert verify_webhook({"x-hub-signature-256": "sha256=00", "x-gitlab-token": "topsecret"}, BODY, SECRET) is None


def call(app: Any, body: bytes, headers: dict[str, str], method: str = "POST", length: str | None = None) -> str:
    environ = {"REQUEST_METHOD": method, "wsgi.input": io.BytesIO(body),
               "CONTENT_LENGTH": str(len(body)) if length is None else length}
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    seen: list[str] = []
    b"".join(app(environ, lambda status, _headers: seen.append(status)))
    return seen[0]


def test_app_triggers_only_when_verified_and_bounds_the_body() -> None:
    triggered: list[str] = []
    app = webhook_app(triggered.append, SECRET, max_bytes=64)
    assert call(app, BODY, {"X-Hub-Signature-256": SIG}).startswith("202")
    assert triggered == ["webhook"]
    assert call(app, BODY, {"X-Hub-Signature-256": "sha256=bad"}).startswith("401")
    assert call(app, BODY, {}, method="GET").startswith("405")
    assert call(app, b"x" * 65, {"X-Signature": SIG}).startswith("413")
    assert call(app, BODY, {"X-Signature": SIG}, length="").startswith("411")
    assert triggered == ["webhook"]
    assert call(webhook_app(triggered.append, None), BODY, {"X-Signature": SIG}).startswith("403")
