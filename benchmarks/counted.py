"""Run a command as a user would (`-m mental_edge analyze ...`, or a script), in this process, with the rows of
every llama_decode counted (bench_common.DecodeCount); the counts go to OUT as JSON when the process ends. The
throughput benchmarks time such a process from the outside and price its counted work with llama.cpp's own
costs (bench_common.floor_seconds) for its efficiency.

    python benchmarks/counted.py OUT.json -m mental_edge analyze ...
    python benchmarks/counted.py OUT.json script.py ARGS...
"""

from __future__ import annotations

import atexit
import json
import runpy
import sys
from pathlib import Path

from bench_common import DecodeCount


def main() -> None:
    out, rest = Path(sys.argv[1]), sys.argv[2:]
    count = DecodeCount().install()
    atexit.register(lambda: out.write_text(json.dumps(count.as_dict())))
    if rest[0] == "-m":
        sys.argv = [rest[1], *rest[2:]]
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main()
