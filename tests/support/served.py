"""`mental-edge serve` on a model, started as a subprocess on a free loopback port (tests only)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
SERVE_LOG = "serve-stderr.txt"  # the server's stderr, in the home folder given to `serving`


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(model: Path, home: Path, *extra: str, wait: float = 90):
    """Yield the server's base URL once /health answers; stop it afterwards."""
    port = _free_port()
    env = {**os.environ, "MENTAL_EDGE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("MENTAL_EDGE_API_KEY", None)
    log = home / SERVE_LOG
    command = [sys.executable, "-m", "mental_edge", "serve", "-m", str(model), "--port", str(port), "--api-key", KEY]
    with open(log, "wb") as err:
        proc = subprocess.Popen([*command, *extra], env=env, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + wait
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the server did not start: {log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def complete(url: str, prompt: str, max_tokens: int) -> dict:
    """POST /v1/completions at temperature 0; the response's JSON."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "model": "any"}
    response = httpx.post(f"{url}/v1/completions", headers=AUTH, json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()
