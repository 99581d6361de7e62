"""`mental-edge serve`: the models over HTTP for a lab's scripts and colleagues (the optional `serve` extra).

One engine, owned by one worker thread that batches every client's requests together (see worker.py); a
FastAPI app in front (app.py, routes.py). Safe by default: loopback only unless an API key is set, bounded
bodies, posts and time, and no request text in the logs unless asked.
"""

from __future__ import annotations

import logging
import sys

from mental_edge.errors import MentalEdgeError
from mental_edge.serve.settings import ServeSettings, check_bind, is_loopback

__all__ = ["ServeSettings", "check_bind", "is_loopback", "serve"]


def serve(engine_opener, *, host: str = "127.0.0.1", port: int = 8000, settings=None) -> None:
    """Open the engine (`engine_opener()`), start its worker and serve until interrupted."""
    try:
        import uvicorn

        from mental_edge.serve.app import BodyLimit, create_app
        from mental_edge.serve.worker import EngineWorker
    except ImportError as exc:
        raise MentalEdgeError(
            f"serving needs the serve extra ({exc.name} is missing): pip install 'mental-edge[serve]'"
        ) from None
    settings = settings or ServeSettings()
    check_bind(host, settings.api_key)
    engine = engine_opener()
    engine.info.sha256  # noqa: B018 - hashed once now, not by the first requests at once
    worker = EngineWorker(engine)
    worker.start()
    if settings.log_requests:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    app = BodyLimit(create_app(worker, settings), settings.max_body, settings.log_requests)
    print(
        f"mental-edge serving {engine.info.name} on http://{host}:{port} (OpenAPI at /docs)",
        file=sys.stderr,
        flush=True,
    )
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            access_log=settings.log_requests,
            log_level="info" if settings.log_requests else "warning",
            timeout_graceful_shutdown=5,
        )
    finally:
        worker.stop()
        engine.close()
