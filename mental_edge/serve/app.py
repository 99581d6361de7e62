"""The FastAPI application: auth, limits, errors, and the small endpoints (`/health`, `/v1/models`).

The analysis and OpenAI-style routes live in `routes.py`; every route reaches the model through the one
`EngineWorker`.
"""

from __future__ import annotations

import json
import logging
import secrets
import time

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from mental_edge.errors import MentalEdgeError
from mental_edge.serve.errors import ApiError
from mental_edge.serve.routes import router
from mental_edge.serve.settings import ServeSettings
from mental_edge.serve.worker import Busy, EngineWorker, TimedOut
from mental_edge.version import __version__

log = logging.getLogger("mental_edge.serve")


def error_response(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    """OpenAI's error shape, which its clients read."""
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate echoed from input
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def create_app(worker: EngineWorker, settings: ServeSettings) -> FastAPI:
    app = FastAPI(
        title="mental-edge",
        version=__version__,
        description="Local mental-health analysis models for non-clinical research.",
    )
    app.state.worker, app.state.settings, app.state.started = worker, settings, int(time.time())
    bearer = HTTPBearer(auto_error=False, description="The server's --api-key")

    def check_key(creds: HTTPAuthorizationCredentials | None = Depends(bearer)):
        if settings.api_key is None:
            return
        if creds is None or not secrets.compare_digest(creds.credentials.encode(), settings.api_key.encode()):
            raise ApiError(401, "a valid API key is required (Authorization: Bearer KEY)", "authentication_error")

    @app.get("/health")
    def health():
        """Liveness, and how busy the engine is: `peak_in_flight` > 1 means requests were batched together."""
        return {"status": "ok", "model": worker.engine.info.name, **worker.stats()}

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    def models():
        info = worker.engine.info
        return {
            "object": "list",
            "data": [{"id": info.name, "object": "model", "created": app.state.started, "owned_by": "mental-edge"}],
        }

    app.include_router(router, dependencies=[Depends(check_key)])
    _add_error_handlers(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.kind)

    @app.exception_handler(MentalEdgeError)
    async def runtime_error(request: Request, exc: MentalEdgeError):
        status = 503 if isinstance(exc, Busy) else 504 if isinstance(exc, TimedOut) else 400
        return error_response(status, str(exc), "server_error" if status >= 500 else "invalid_request_error")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "the body is not valid JSON")
        # where and what, never the submitted value (it may be a post)
        message = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in errors[:5])
        return error_response(422, message)


class BodyLimit:
    """ASGI middleware: refuses bodies over `limit` bytes (413) before the app reads them, and logs request
    bodies only when asked."""

    def __init__(self, app, limit: int, log_requests: bool = False):
        self.app, self.limit, self.log_requests = app, limit, log_requests

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            return await _send_error(send, 413, f"the body is over {self.limit} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await _send_error(send, 413, f"the body is over {self.limit} bytes")
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if self.log_requests:
            log.info("%s %s %s", scope["method"], scope["path"], body.decode("utf-8", "replace"))
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the client to go away (streaming responses)

        return await self.app(scope, replay, send)


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": status}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
