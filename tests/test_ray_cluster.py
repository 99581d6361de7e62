"""`analyze --ray HOST:PORT` against real clusters started with `ray start`, as a research group runs them.

Each head is `ray start --head --block` in its own session, run by this test's Python (so its workers import
this mental-edge), with its own temp dir, HOME and a bounded block of ports, advertised and bound on 127.0.0.1
only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is what keeps Ray from swapping 127.0.0.1 for the machine's routable
address). The fixture stops it by its own processes: SIGTERM to `ray start --block` (which ends what it started),
then SIGKILL to whatever of its session is left; never `ray stop`, which would end every Ray on the machine.

Covered: the real CLI joining a token-authenticated cluster by address with the token in each of Ray's three
places, records equal to a single-machine `--exact` run; one line, and nothing written, without the token or with
a wrong one; an unauthenticated cluster refused (with or without a token on the driver) unless
--ray-allow-unauthenticated, recorded in run.ray.auth. Not covered: a second node. Ray will not start a worker
node on loopback (`ray start --address` refuses when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and otherwise rewrites
127.0.0.1 to the routable address, where this head does not listen), and a test must not open ports beyond
127.0.0.1. Nor `ray://` addresses: Ray Client needs `ray[client]`, which the extras do not install.
"""

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from mental_edge import ray_auth

POSTS = [
    "I cry every night and I can't get out of bed anymore.",
    "Had a great run this morning, feeling strong.",
    "My boss yelled at me again and my rent is due tomorrow.",
    "Nothing matters, I haven't eaten in days.",
    "Just adopted a puppy, she is the cutest!",
    "I keep failing my exams and my parents won't talk to me.",
]
SETTINGS = ["--task", "DR", "--task", "dreaddit", "--max-tokens", "6", "--threads", "1", "--exact"]
PORTS = 48  # each head's block: its own ports and its workers' range
LOCAL = "127.0.0.1"


@dataclass
class Head:
    address: str
    process: subprocess.Popen
    log: Path
    temp: str  # Ray's temp dir: short, as Ray's socket paths in it must fit 107 bytes

    def stop(self) -> None:
        """End this head's own processes: `ray start --block` ends its children on SIGTERM; then the rest."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        for pid in session_members(self.process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        deadline = time.time() + 10  # SIGKILL is delivered, not yet done, when os.kill returns
        while session_members(self.process.pid) and time.time() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.temp, ignore_errors=True)


def session_members(sid: int) -> list[int]:
    """The live processes of session `sid` (the head's `ray start`, started in a session of its own)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session; not a zombie
                members.append(int(entry.name))
    return members


def free_port_block() -> int:
    """A first port such that it and the PORTS - 1 after it are free on 127.0.0.1."""
    for _ in range(50):
        base = random.randrange(20000, 60000 - PORTS)
        if all(port_free(port) for port in range(base, base + PORTS)):
            return base
    pytest.fail("no free block of ports on 127.0.0.1")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((LOCAL, port))
        except OSError:
            return False
    return True


def ray_env(home: Path, **extra) -> dict:
    """This environment without any Ray address or token, HOME at `home`, and Ray kept on 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), MENTAL_EDGE_HOME=str(home / "mental-edge"), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env.update(extra)
    return env


def start_head(root: Path, **auth) -> Head:
    """`ray start --head` with minimal resources (2 CPUs, 80 MB object store, no dashboard) and `auth` env."""
    root.mkdir(parents=True)
    (root / "home").mkdir()
    base = free_port_block()
    ports = {
        "--port": base,
        "--node-manager-port": base + 1,
        "--object-manager-port": base + 2,
        "--dashboard-agent-grpc-port": base + 3,
        "--dashboard-agent-listen-port": base + 4,
        "--metrics-export-port": base + 5,
        "--runtime-env-agent-port": base + 6,
        "--min-worker-port": base + 8,
        "--max-worker-port": base + PORTS - 1,
    }
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block"]
    command += [str(x) for pair in ports.items() for x in pair]
    command += ["--num-cpus", "2", "--object-store-memory", str(80 * 10**6), "--include-dashboard", "false"]
    temp = tempfile.mkdtemp(prefix="me-ray-")
    command += ["--disable-usage-stats", "--temp-dir", temp]
    log = root / "ray-start.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env=ray_env(root / "home", **auth),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    head = Head(f"{LOCAL}:{base}", process, log, temp)
    deadline = time.time() + 90
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if process.poll() is not None or time.time() > deadline:
            head.stop()
            pytest.fail(f"ray start failed:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    return head


@pytest.fixture(scope="module")
def token() -> str:
    return secrets.token_hex(16)


@pytest.fixture(scope="module")
def token_head(tmp_path_factory, token):
    """A head with token authentication on, its token given to it the way Ray documents (RAY_AUTH_TOKEN_PATH)."""
    root = tmp_path_factory.mktemp("ray-token")
    (root / "token").write_text(token)
    head = None
    try:
        head = start_head(root / "head", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(root / "token"))
        yield head
    finally:
        if head is not None:
            head.stop()


@pytest.fixture(scope="module")
def posts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ray-cluster-in") / "posts.txt"
    path.write_text("\n".join(POSTS) + "\n")
    return path


@pytest.fixture(scope="module")
def reference(smollm2_gguf, posts, tmp_path_factory) -> list[dict]:
    """The single-machine `--exact` run of the same rows, by the same CLI."""
    root = tmp_path_factory.mktemp("ray-cluster-ref")
    result = analyze(smollm2_gguf, posts, root / "out.jsonl", env=ray_env(root))
    assert result.returncode == 0, result.stdout
    return read(root / "out.jsonl")


def analyze(model, posts, out, *extra, env) -> subprocess.CompletedProcess:
    """`mental-edge analyze` in a process of its own, stdout and stderr together."""
    command = [sys.executable, "-m", "mental_edge", "analyze", "-m", model, "-i", posts, "-o", out, *SETTINGS, *extra]
    return subprocess.run(
        list(map(str, command)), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300
    )


def read(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def without_ray(records: list[dict]) -> list[dict]:
    return [{**r, "run": {k: v for k, v in r["run"].items() if k != "ray"}} for r in records]


def home_with_token(root: Path, token: str | None) -> Path:
    home = root / "home"
    (home / ".ray").mkdir(parents=True)
    if token is not None:
        (home / ".ray" / "auth_token").write_text(token + "\n")
    return home


def test_joined_by_address_with_the_default_token_file_the_records_equal_one_machine(
    token_head, token, smollm2_gguf, posts, reference, tmp_path
):
    env = ray_env(home_with_token(tmp_path, token))  # `ray get-auth-token` > ~/.ray/auth_token
    out = tmp_path / "out.jsonl"
    result = analyze(smollm2_gguf, posts, out, "--ray", token_head.address, "--ray-workers", "2", env=env)
    assert result.returncode == 0, result.stdout
    assert "ran on Ray: 2 workers on 1 node(s)\n" in result.stdout
    records = read(out)
    assert len(records) == 2 * len(POSTS)
    assert without_ray(records) == reference
    assert {json.dumps(r["run"]["ray"], sort_keys=True) for r in records} == {
        json.dumps({"auth": "token", "node": socket.gethostname(), "workers": 2}, sort_keys=True)
    }


@pytest.mark.parametrize("source", ["RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"])
def test_the_token_from_rays_variables(token_head, token, smollm2_gguf, posts, reference, tmp_path, source):
    given = {"RAY_AUTH_TOKEN": token} if source == "RAY_AUTH_TOKEN" else {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "t")}
    (tmp_path / "t").write_text(token)
    env = ray_env(home_with_token(tmp_path, None), **given)
    out = tmp_path / "out.jsonl"
    result = analyze(smollm2_gguf, posts, out, "--ray", token_head.address, "--limit", "1", env=env)
    assert result.returncode == 0, result.stdout
    assert without_ray(read(out)) == reference[:2]


@pytest.mark.parametrize("token_given", [None, "0123456789abcdef0123456789abcdef"], ids=["no token", "wrong token"])
def test_a_refused_token_is_one_line_naming_the_fix(token_head, smollm2_gguf, posts, tmp_path, token_given):
    # Ray retries a refused connection for 20 s before giving up; 2 s is enough to be refused on this machine
    env = ray_env(home_with_token(tmp_path, token_given), RAY_gcs_server_port_wait_time_s="2")
    out = tmp_path / "out.jsonl"
    result = analyze(smollm2_gguf, posts, out, "--ray", token_head.address, env=env)
    assert result.returncode == 1
    where = f"the Ray cluster at {token_head.address}"
    if token_given is None:
        expected = f"Error: {where} requires its authentication token: {ray_auth.TOKEN_FIX}\n"
    else:
        source = tmp_path / "home" / ".ray" / "auth_token"
        expected = f"Error: {where} refused the token in {source} (another cluster's?): {ray_auth.TOKEN_FIX}\n"
    assert result.stdout == expected  # one line: none of Ray's warnings
    assert not out.exists()


def test_an_unauthenticated_cluster_is_refused_unless_allowed(smollm2_gguf, posts, reference, tmp_path, token):
    head = None
    try:
        head = start_head(tmp_path / "open-head", RAY_AUTH_MODE="disabled")
        refused = (
            "does not enforce token authentication, so anything that can reach it could read the posts: "
            f"start it with RAY_AUTH_MODE=token on every node (see docs/ray.md), or pass {ray_auth.ALLOW_OPTION}"
        )
        for name, home_token in [("bare", None), ("with-token", token)]:  # a driver sending a token is refused too
            env = ray_env(home_with_token(tmp_path / name, home_token))
            out = tmp_path / name / "out.jsonl"
            result = analyze(smollm2_gguf, posts, out, "--ray", head.address, env=env)
            assert result.returncode == 1, result.stdout
            assert result.stdout == f"Error: the Ray cluster at {head.address} {refused} to send them anyway\n"
            assert not out.exists()
        env = ray_env(home_with_token(tmp_path / "allowed-token", token))  # its workers could not call back to it
        result = analyze(
            smollm2_gguf, posts, tmp_path / "x.jsonl", "--ray", head.address, ray_auth.ALLOW_OPTION, env=env
        )
        assert result.returncode == 1 and result.stdout.count("\n") == 1, result.stdout
        assert result.stdout.endswith(
            "cannot answer a driver that does (this one, RAY_AUTH_MODE=token): run with RAY_AUTH_MODE=disabled\n"
        )
        out = tmp_path / "allowed.jsonl"
        env = ray_env(home_with_token(tmp_path / "allowed", None))
        result = analyze(
            smollm2_gguf, posts, out, "--ray", head.address, "--limit", "1", ray_auth.ALLOW_OPTION, env=env
        )
        assert result.returncode == 0, result.stdout
        assert "(a cluster without token authentication, as allowed)" in result.stdout
        records = read(out)
        assert without_ray(records) == reference[:2]
        assert {r["run"]["ray"]["auth"] for r in records} == {"none"}
    finally:
        if head is not None:
            head.stop()
    assert session_members(head.process.pid) == []
