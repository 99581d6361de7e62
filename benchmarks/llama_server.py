"""llama.cpp's own server as a contender: the same kernels as llama-cpp-python (built from the llama.cpp source the
installed llama-cpp-python's sdist vendors, same version), continuous batching over N parallel slots, driven by
N concurrent clients with the same prompts and budgets as the plain loop.

    python benchmarks/llama_server.py --build            # build once (about 10 minutes on 2 cores), cached
    python benchmarks/llama_server.py MODEL.gguf PROMPTS.json MAX_TOKENS THREADS --parallel 4 8

The build fetches nothing but the sdist from the package index (`pip download --no-binary :all:`), builds under
$TMPDIR/mental-edge-bench/llama-server/ and is reused. The server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(tempfile.gettempdir()) / "mental-edge-bench" / "llama-server"


def binary() -> Path:
    """The llama-server built from the installed llama-cpp-python's own llama.cpp, built on first use."""
    version = importlib.metadata.version("llama-cpp-python")
    build = ROOT / version
    exe = build / "build" / "bin" / "llama-server"
    if exe.is_file():
        return exe
    build.mkdir(parents=True, exist_ok=True)
    sdists = list(build.glob("llama_cpp_python-*.tar.gz"))
    if not sdists:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(build),
             f"llama-cpp-python=={version}"],
            check=True,
        )  # fmt: skip
        sdists = list(build.glob("llama_cpp_python-*.tar.gz"))
    source = build / "src"
    if not source.is_dir():
        with tarfile.open(sdists[0]) as tar:
            tar.extractall(source, filter="data")
    llama_cpp = next(source.glob("*/vendor/llama.cpp"))
    flags = ["-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
             "-DLLAMA_BUILD_SERVER=ON", "-DCMAKE_BUILD_TYPE=Release"]  # fmt: skip
    subprocess.run(["cmake", "-S", str(llama_cpp), "-B", str(build / "build"), *flags], check=True)
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
    subprocess.run(["cmake", "--build", str(build / "build"), "--target", "llama-server", "-j", jobs], check=True)
    return exe


def add_option(parser: argparse.ArgumentParser) -> None:
    """--llama-server N...: the throughput benchmarks' contender row, N slots and N clients each."""
    parser.add_argument(
        "--llama-server",
        type=int,
        nargs="*",
        default=[],
        metavar="N",
        help="also llama.cpp's own llama-server with N parallel slots and N clients, on the plain loop's prompts "
        "and budgets (built once from the installed llama-cpp-python's sdist: llama_server.py)",
    )


def verdict_line(times: dict[str, float], ours: float) -> str | None:
    """The target "ahead of the best llama-server" over `times` (contender -> seconds; llama-server's rows named
    "llama-server ..."), against `ours` seconds; None when no llama-server ran."""
    servers = [who for who in times if who.startswith("llama-server")]
    if not servers:
        return None
    best = min(servers, key=times.__getitem__)
    got = times[best] / ours
    return f"  target ahead of the best llama-server ({best}): {'met' if got > 1 else 'NOT met'} ({got:.2f}x)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(model: Path, queries: list[str], max_tokens: int, threads: int, parallel: int, n_ctx: int = 2048) -> dict:
    """Start the server with `parallel` slots (each `n_ctx` tokens), send every query from `parallel` clients at
    temperature 0, stop it. Seconds for the whole process and for the requests alone, tokens generated."""
    port = free_port()
    command = [str(binary()), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-t", str(threads),
               "-tb", str(threads), "-np", str(parallel), "-c", str(n_ctx * parallel), "--no-webui"]  # fmt: skip
    started = time.perf_counter()
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(port, server)
        ready = time.perf_counter()
        generated = _send_all(port, queries, max_tokens, parallel)
        done = time.perf_counter()
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {"whole": time.perf_counter() - started, "requests": done - ready, "generated": generated}


def _wait_ready(port: int, server: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.time() + limit
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"llama-server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("llama-server did not start")


def _send_all(port: int, queries: list[str], max_tokens: int, clients: int) -> int:
    """Each client takes the next query until none is left (the order a queue of work would give)."""
    lock, pending, generated = threading.Lock(), list(enumerate(queries)), [0]

    def client() -> None:
        while True:
            with lock:
                if not pending:
                    return
                _, query = pending.pop(0)
            body = {"prompt": query, "n_predict": max_tokens, "temperature": 0, "cache_prompt": True}
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/completion", json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=600) as response:
                answer = json.loads(response.read())
            with lock:
                generated[0] += int(answer.get("tokens_predicted", 0))

    workers = [threading.Thread(target=client) for _ in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return generated[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", action="store_true", help="Only build (or find) llama-server and print its path.")
    parser.add_argument("model", nargs="?")
    parser.add_argument("prompts", nargs="?", help="A JSON list of prompts.")
    parser.add_argument("max_tokens", nargs="?", type=int)
    parser.add_argument("threads", nargs="?", type=int)
    parser.add_argument("--parallel", type=int, nargs="+", default=[4, 8])
    args = parser.parse_args()
    if args.build:
        print(binary())
        return
    queries = json.loads(Path(args.prompts).read_text(encoding="utf-8"))
    for n in args.parallel:
        got = run(Path(args.model), queries, args.max_tokens, args.threads, n)
        print(f"llama-server -np {n}: {got['whole']:.1f} s whole, {got['requests']:.1f} s requests, "
              f"{got['generated']} tokens")  # fmt: skip


if __name__ == "__main__":
    main()
