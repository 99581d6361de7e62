"""ray_auth without a cluster: where the token is found, and what each refusal says (fast tier)."""

import os

import pytest

from mental_edge import ray_auth
from mental_edge.errors import MentalEdgeError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_the_token_is_looked_for_in_ray_s_order(home, monkeypatch):
    assert ray_auth.token_source() is None
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("\n")
    assert ray_auth.token_source() is None  # an empty file holds no token
    (home / ".ray" / "auth_token").write_text("abc\n")
    assert ray_auth.token_source() == str(home / ".ray" / "auth_token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(home / "t"))
    assert ray_auth.token_source() == f"RAY_AUTH_TOKEN_PATH ({home / 't'})"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "xyz")
    assert ray_auth.token_source() == "RAY_AUTH_TOKEN"


def test_a_token_path_ray_cannot_read_is_one_line_before_ray_runs(home, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(home / "missing"))
    with pytest.raises(MentalEdgeError, match=r"^RAY_AUTH_TOKEN_PATH: .*missing: cannot read the Ray token"):
        ray_auth.prepare("10.0.0.1:6379")
    (home / "empty").write_text(" \n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(home / "empty"))
    with pytest.raises(MentalEdgeError, match="the file is empty"):
        ray_auth.prepare("10.0.0.1:6379")


def test_prepare_turns_token_mode_on_only_when_a_token_is_there_and_the_mode_unset(home, monkeypatch):
    ray_auth.prepare("10.0.0.1:6379")
    assert "RAY_AUTH_MODE" not in os.environ
    monkeypatch.setenv("RAY_AUTH_TOKEN", "abc")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray_auth.prepare("10.0.0.1:6379")  # the user's own setting stands
    assert os.environ["RAY_AUTH_MODE"] == "disabled"


def refused() -> ConnectionError:
    try:
        try:
            raise RuntimeError("Failed to connect to GCS. Unauthenticated: InvalidAuthToken: missing or incorrect")
        except RuntimeError as inner:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from inner
    except ConnectionError as exc:
        return exc


def test_refusals_name_the_fix(home, monkeypatch):
    assert ray_auth.refusal("h:1", ConnectionError("Failed to connect to Ray cluster at h:1")) is None
    assert str(ray_auth.refusal("h:1", refused())) == (
        f"the Ray cluster at h:1 requires its authentication token: {ray_auth.TOKEN_FIX}"
    )
    monkeypatch.setenv("RAY_AUTH_TOKEN", "abc")
    assert "refused the token in RAY_AUTH_TOKEN" in str(ray_auth.refusal("h:1", refused()))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert "RAY_AUTH_MODE=disabled here keeps Ray from sending" in str(ray_auth.refusal("h:1", refused()))


def test_a_cluster_is_accepted_only_when_every_node_enforces_the_token():
    assert ray_auth.check_enforced("h:1", ["token", "token"], allowed=False) == "token"
    with pytest.raises(MentalEdgeError, match="does not enforce token authentication"):
        ray_auth.check_enforced("h:1", ["token", "none"], allowed=False)
    assert ray_auth.check_enforced("h:1", ["none"], allowed=True) == "none"
    with pytest.raises(MentalEdgeError, match="run with RAY_AUTH_MODE=disabled"):
        ray_auth.check_enforced("h:1", ["none"], allowed=True, driver="token")
