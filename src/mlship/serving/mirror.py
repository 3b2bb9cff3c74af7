"""Shadow copies from the model server itself (the Kubernetes target: no router, no service mesh).

When the deploy sets `MLSHIP_SHADOW_URL` (the preview Service, e.g. `http://app-preview.ns.svc
.cluster.local`) and `MLSHIP_SHADOW_SAMPLE` on the live Deployment, every live pod copies a
sample of its real `/predict` requests there *after* answering them, through the same bounded,
fire-and-forget copier as the local router (`mlship.traffic.copier`), and compares the answers.
`GET /shadow` returns this pod's comparison figures (JSON; 404 when no shadow is configured).
Synthetic requests (smoke tests, probes, other copies) are never copied.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from mlship.errors import ConfigError
from mlship.traffic.copier import ShadowCopier

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

URL_VAR = "MLSHIP_SHADOW_URL"
SAMPLE_VAR = "MLSHIP_SHADOW_SAMPLE"
SYNTHETIC = b"x-mlship-synthetic"


def shadow_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, float] | None:
    """("host:port", sample) from the environment, None when no shadow is set; ConfigError if malformed."""
    env = os.environ if environ is None else environ
    url = env.get(URL_VAR, "").strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(
            f"{URL_VAR}={url} is not http://HOST[:PORT]", hint="the deploy sets it to the preview Service"
        )
    raw = env.get(SAMPLE_VAR, "1").strip() or "1"
    try:
        sample = float(raw)
    except ValueError:
        sample = -1.0
    if not 0.0 < sample <= 1.0:
        raise ConfigError(f"{SAMPLE_VAR}={raw} is not a share in (0, 1]", hint="e.g. 0.1 copies one request in ten")
    return f"{parts.hostname}:{parts.port or 80}", sample


def install(app: Any, environ: Mapping[str, str] | None = None) -> ShadowCopier | None:
    """Add the mirror to a FastAPI app when the environment names a shadow; return its copier."""
    config = shadow_from_env(environ)
    if config is None:
        return None
    copier = ShadowCopier(*config)
    app.add_middleware(MirrorMiddleware, copier=copier)
    return copier


class MirrorMiddleware:
    """Pure ASGI: copy answered real POST /predict requests to the shadow; serve GET /shadow."""

    def __init__(self, app: ASGIApp, copier: ShadowCopier) -> None:
        self.app = app
        self.copier = copier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "")
        if path == "/shadow" and method == "GET":
            body = orjson.dumps(self.copier.stats.to_dict())
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        synthetic = any(name == SYNTHETIC for name, _ in scope.get("headers", ()))
        if path != "/predict" or method != "POST" or synthetic or not self.copier.wanted():
            await self.app(scope, receive, send)
            return
        request: list[bytes] = []
        answer: list[bytes] = []
        status = 0

        async def tapped_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                request.append(message.get("body", b""))
            return message

        async def tapped_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                answer.append(message.get("body", b""))
            await send(message)

        await self.app(scope, tapped_receive, tapped_send)
        body = b"".join(request)
        head = (
            b"POST /predict HTTP/1.1\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        self.copier.offer(head, body, status, b"".join(answer))  # after the answer went out: never waited on
