"""What a server is allowed: its limits, and where it may listen (loopback unless an API key is set)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mental_edge.errors import MentalEdgeError

LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class ServeSettings:
    api_key: str | None = None
    max_body: int = 1 << 20  # bytes of one request body
    max_post_chars: int = 32_000  # characters of one post, message or prompt
    timeout: float = 300.0  # seconds one request may take, queueing included
    log_requests: bool = False  # request bodies in the log (they hold posts)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Anything but loopback is reachable by others: refuse it without a key."""
    if not is_loopback(host) and not api_key:
        raise MentalEdgeError(
            f"--host {host} is reachable from other machines: set --api-key (or MENTAL_EDGE_API_KEY) to serve there"
        )
