"""How the `analyze --ray` driver authenticates to a Ray cluster, and why it refuses one that does not ask.

Ray (2.52 and later) authenticates with one shared token when a cluster runs with `RAY_AUTH_MODE=token`. The
token is found, in Ray's order, in `RAY_AUTH_TOKEN`, in the file `RAY_AUTH_TOKEN_PATH` names, or in
`~/.ray/auth_token` (`ray get-auth-token` prints it). Ray's driver sends it only when its own `RAY_AUTH_MODE` is
`token`, and it turns that on by itself only for a cluster found with `auto`; `prepare` turns it on for an
explicit address too when a token is there, so a user who has the token as Ray documents it needs nothing more.

A cluster that does not enforce the token accepts jobs from anything that can reach it, and post text travels
to every node: `check_enforced` refuses it unless the user allowed it by name. Whether a cluster enforces the
token is read on its nodes (a task on each reports its node's mode), since a driver that sends a token cannot tell
from a successful connection whether the cluster needed it (and a token-mode driver's workers on a cluster without
token authentication fail as they call back to it, with nothing that says why).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from mental_edge.errors import MentalEdgeError

MODE_VAR = "RAY_AUTH_MODE"
ALLOW_OPTION = "--ray-allow-unauthenticated"
TOKEN_FIX = (
    "set RAY_AUTH_TOKEN to the cluster's token (`ray get-auth-token` on the head node prints it), "
    "or RAY_AUTH_TOKEN_PATH to a file holding it, or put it in ~/.ray/auth_token"
)


def token_source() -> str | None:
    """Where Ray would take this machine's token from (the first of Ray's three places that has one), or None."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return f"RAY_AUTH_TOKEN_PATH ({path})"  # Ray reads only this file then, even if it is missing
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file() and default.read_text(errors="replace").strip():
        return str(default)
    return None


def prepare(address: str) -> None:
    """Before joining `address`: when a token is there and RAY_AUTH_MODE is unset, have Ray's driver send it.

    Ray reads RAY_AUTH_MODE into its cached configuration when it is imported, so a Ray imported before this
    call (a library user's, the tests') has that configuration read again.
    """
    _check_token_path()
    if address == "local" or os.environ.get(MODE_VAR) is not None or token_source() is None:
        return  # `local` starts its own instance, with its own token (Ray 2.59 and later turn the mode on)
    os.environ[MODE_VAR] = "token"
    if "ray._raylet" in sys.modules:
        from ray._raylet import Config  # Ray's own way to refresh it (ray._private...._enable_token_auth)

        Config.initialize("")


def _check_token_path() -> None:
    """Ray stops the whole process when RAY_AUTH_TOKEN_PATH names a file it cannot read: say so first."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not path or os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return
    try:
        text = Path(path).expanduser().read_text(errors="replace")
    except OSError as exc:
        raise MentalEdgeError(f"RAY_AUTH_TOKEN_PATH: {path}: cannot read the Ray token ({exc.strerror})") from None
    if not text.strip():
        raise MentalEdgeError(f"RAY_AUTH_TOKEN_PATH: {path}: the file is empty, not a Ray token")


def refusal(address: str, exc: BaseException) -> MentalEdgeError | None:
    """The one-line error for a cluster that turned this driver away for want of the right token, else None."""
    chain, seen = [], exc
    while seen is not None and len(chain) < 10:
        chain.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    text = "\n".join(chain)
    if "InvalidAuthToken" not in text and "Unauthenticated" not in text and "AuthenticationError" not in text:
        return None
    source = token_source()
    mode = os.environ.get(MODE_VAR)
    if source is None:
        return MentalEdgeError(f"the Ray cluster at {address} requires its authentication token: {TOKEN_FIX}")
    if mode is not None and mode.lower() != "token":
        return MentalEdgeError(
            f"the Ray cluster at {address} requires its authentication token, and {MODE_VAR}={mode} here keeps "
            f"Ray from sending the one in {source}: unset {MODE_VAR} or set it to token"
        )
    return MentalEdgeError(
        f"the Ray cluster at {address} refused the token in {source} (another cluster's?): {TOKEN_FIX}"
    )


def node_mode() -> str:
    """This process's Ray authentication mode, `token` or `none` (run on a worker, it is its node's)."""
    try:
        from ray._raylet import AuthenticationMode, get_authentication_mode
    except ImportError:  # a Ray without token authentication (before 2.52)
        return "none"
    return "token" if get_authentication_mode() == AuthenticationMode.TOKEN else "none"


def check_enforced(address: str, modes: Sequence[str], allowed: bool, driver: str = "none") -> str:
    """The cluster's mode (`token`, or `none` where allowed) from its nodes' `modes`; an error when a node does
    not enforce the token, or when this `driver` sends one to a cluster whose workers cannot answer it."""
    if all(mode == "token" for mode in modes):
        return "token"
    if allowed and driver == "token":
        raise MentalEdgeError(
            f"the Ray cluster at {address} does not use token authentication, and its workers cannot answer a "
            f"driver that does (this one, {MODE_VAR}=token): run with {MODE_VAR}=disabled"
        )
    if allowed:
        return "none"
    raise MentalEdgeError(
        f"the Ray cluster at {address} does not enforce token authentication, so anything that can reach it "
        f"could read the posts: start it with {MODE_VAR}=token on every node (see docs/ray.md), "
        f"or pass {ALLOW_OPTION} to send them anyway"
    )


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Ray's C++ core prints its connection warnings (a line a second while refused) straight to file
    descriptor 2; they go to a discarded file while joining, and the caller says what happened in one line."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        yield
        return
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
