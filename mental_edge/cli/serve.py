"""`mental-edge serve`: the analysis runtime and OpenAI-style generation over HTTP."""

from __future__ import annotations

import click

from mental_edge.api.model import load
from mental_edge.cli import main
from mental_edge.cli.options import model_options, say


@main.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind (other than loopback needs --api-key)."
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--api-key",
    envvar="MENTAL_EDGE_API_KEY",
    default=None,
    help="Clients must send 'Authorization: Bearer KEY' (also read from MENTAL_EDGE_API_KEY).",
)
@click.option(
    "--max-body",
    type=click.IntRange(min=1024),
    default=1 << 20,
    show_default=True,
    help="Largest request body in bytes.",
)
@click.option(
    "--max-post-chars",
    type=click.IntRange(min=1),
    default=32_000,
    show_default=True,
    help="Longest post, message or prompt in characters.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Seconds one request may take, queueing included.",
)
@click.option(
    "--log-requests", is_flag=True, help="Log each request with its body (posts!) and the access log; off by default."
)
@model_options
def serve(host, port, api_key, max_body, max_post_chars, timeout, log_requests, model_opts):
    """Serve a model over HTTP: /v1/analyze, OpenAI-style /v1/chat/completions and /v1/completions."""
    from mental_edge.serve import ServeSettings
    from mental_edge.serve import serve as run_server

    settings = ServeSettings(
        api_key=api_key, max_body=max_body, max_post_chars=max_post_chars, timeout=timeout, log_requests=log_requests
    )
    run_server(lambda: load(**model_opts, say=say).engine, host=host, port=port, settings=settings)
