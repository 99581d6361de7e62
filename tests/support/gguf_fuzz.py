"""Seeded mutations of a real GGUF file and the harness that loads each one as the CLI does (tests and
benchmarks/gguf_fuzz.py).

The mutations are found with gguf's own reader on the good file (not with the check under test): truncations,
counts and lengths made huge, every hyperparameter set to 0, 1, -1 and its maximum, tensor-info damage and seeded
byte flips in the header region. Each is a list of (offset, bytes) patches plus an optional truncation, applied to
one working copy and undone after, so a 100 MB file is never copied per case.

`FuzzRun.run(case)`: the check (engine/file_check.py, what `load_engine` calls before any backend) runs in this
process; a refusal must be one MentalEdgeError line. A file it passes goes to a worker subprocess
(load_worker.py) that opens it through the CLI's `open_engine` and generates a few tokens; the worker loads file
after file, is restarted after a crash (a signal) or a hang (no answer in time), and the case it died on is named.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import gguf

from mental_edge.engine.file_check import check_model_file
from mental_edge.errors import MentalEdgeError

WORKER = Path(__file__).with_name("load_worker.py")
U32 = (0, 1, 0xFFFFFFFF, 0x7FFFFFFF)  # 0, 1, -1 and the maximum of a 32-bit field
U64 = (0, 1, (1 << 64) - 1, (1 << 63) - 1, 1 << 32, 1 << 40)
FLOATS = (0.0, 1.0, -1.0, 3.4028235e38, float("nan"), float("inf"))


@dataclass
class Case:
    name: str
    patches: list[tuple[int, bytes]] = field(default_factory=list)
    truncate: int | None = None


@dataclass
class Outcome:
    case: str
    status: str  # "refused", "ran", "crash", "hang", "traceback"
    message: str = ""
    where: str = "check"  # "check" (this process) or "worker"


def value_offset(reader, key: str) -> int:
    """Where a scalar key's value (or a string's length) starts in the file."""
    return _field_parts(reader.fields[key])[3][0]


def _field_parts(f) -> list[tuple[int, int]]:
    """(offset, size) of each part of a field, from its start."""
    out, pos = [], f.offset
    for part in f.parts:
        out.append((pos, part.nbytes))
        pos += part.nbytes
    return out


def cases(path: Path, seed: int = 0, flips: int = 40) -> list[Case]:
    reader = gguf.GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    size = path.stat().st_size
    out = [Case(f"truncate {n}", truncate=n) for n in _truncations(reader, size)]
    out += [Case(f"tensor_count={v}", [(8, struct.pack("<Q", v))]) for v in U64]
    out += [Case(f"kv_count={v}", [(16, struct.pack("<Q", v))]) for v in U64]
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        out += _key_cases(key, f, arch)
    out += _tensor_cases(reader, seed)
    rng = random.Random(seed)
    for i in range(flips):
        spots = [(rng.randrange(reader.data_offset), bytes([rng.randrange(256)])) for _ in range(rng.randint(1, 8))]
        out.append(Case(f"flips #{i}", spots))
    return out


def _truncations(reader, size: int) -> list[int]:
    marks = {0, 3, 4, 8, 16, 24, reader.data_offset, reader.data_offset + 1, size - 1}
    fields = [f for k, f in reader.fields.items() if not k.startswith("GGUF.")]
    marks.update(f.offset + 5 for f in fields[:: max(1, len(fields) // 6)])
    marks.add(reader.tensors[0].field.offset + 3)
    return sorted(m for m in marks if 0 <= m < size)


def _key_cases(key: str, f, arch: str) -> list[Case]:
    parts = _field_parts(f)
    (len_at, _), _, (type_at, _) = parts[0], parts[1], parts[2]
    out = [Case(f"{key}: key length {v}", [(len_at, struct.pack("<Q", v))]) for v in ((1 << 64) - 1, 1 << 40, 0)]
    out += [Case(f"{key}: value type {v}", [(type_at, struct.pack("<I", v))]) for v in (13, 0xFFFFFFFF)]
    kind = f.types[0]
    if kind == gguf.GGUFValueType.STRING:
        at = parts[3][0]
        out += [Case(f"{key}: string length {v}", [(at, struct.pack("<Q", v))]) for v in (1 << 62, 1 << 31, 0)]
    elif kind == gguf.GGUFValueType.ARRAY:
        item_at, count_at = parts[3][0], parts[4][0]
        count = int(f.parts[4][0])
        out += [Case(f"{key}: item type {v}", [(item_at, struct.pack("<I", v))]) for v in (9, 13)]
        out += [
            Case(f"{key}: array length {v}", [(count_at, struct.pack("<Q", v))])
            for v in (1 << 62, 1 << 32, count + 1, max(count - 1, 0), 0)
        ]
        if f.types[-1] == gguf.GGUFValueType.STRING and len(parts) > 6:
            out.append(Case(f"{key}: first item length {1 << 40}", [(parts[5][0], struct.pack("<Q", 1 << 40))]))
    elif key.startswith(f"{arch}.") or key.endswith("_token_id") or key.startswith("general."):
        out += _number_cases(key, kind, parts[3][0])
    return out


def _number_cases(key: str, kind, at: int) -> list[Case]:
    if kind in (gguf.GGUFValueType.UINT32, gguf.GGUFValueType.INT32):
        return [Case(f"{key}={v}", [(at, struct.pack("<I", v))]) for v in U32]
    if kind in (gguf.GGUFValueType.UINT64, gguf.GGUFValueType.INT64):
        return [Case(f"{key}={v}", [(at, struct.pack("<Q", v))]) for v in U64[:4]]
    if kind == gguf.GGUFValueType.FLOAT32:
        return [Case(f"{key}={v}", [(at, struct.pack("<f", v))]) for v in FLOATS]
    if kind == gguf.GGUFValueType.BOOL:
        return [Case(f"{key}={v}", [(at, bytes([v]))]) for v in (0, 1, 2, 255)]
    return []


def _tensor_cases(reader, seed: int) -> list[Case]:
    rng = random.Random(seed + 1)
    tensors = reader.tensors
    picks = sorted({0, 1, len(tensors) - 1, *rng.sample(range(len(tensors)), min(3, len(tensors)))})
    out = []
    for i in picks:
        t = tensors[i]
        parts = _field_parts(t.field)  # name length, name, n_dims, dims, type, offset
        n_dims_at, dims_at, type_at, offset_at = parts[2][0], parts[3][0], parts[4][0], parts[5][0]
        name = t.name
        out += [Case(f"{name}: n_dims={v}", [(n_dims_at, struct.pack("<I", v))]) for v in (0, 5, 0xFFFFFFFF)]
        dims = [-1, 0, 1 << 62, int(t.shape[0]) + 32, 1 << 31]
        out += [Case(f"{name}: dim0={v}", [(dims_at, struct.pack("<q", v))]) for v in dims]
        out += [Case(f"{name}: type={v}", [(type_at, struct.pack("<I", v))]) for v in (4, 100, 0, 8)]
        offset = int(t.field.parts[-1][0])
        offsets = [offset + 1, offset + 32, 1 << 63, 0 if offset else 32]
        out += [Case(f"{name}: offset={v}", [(offset_at, struct.pack("<Q", v))]) for v in offsets]
    return out


class FuzzRun:
    """One working copy of `base`, the check in this process and a worker subprocess for what it passes."""

    def __init__(self, base: Path, work: Path, timeout: float = 60.0, all_in_worker: bool = False):
        self.base, self.work, self.timeout, self.all_in_worker = base, work, timeout, all_in_worker
        shutil.copyfile(base, work)
        self.size = base.stat().st_size
        self.worker: subprocess.Popen | None = None
        self.loads = 0

    def run(self, case: Case) -> Outcome:
        with self.applied(case):
            outcome = None if self.all_in_worker else self._check(case)
            return outcome or self._load(case)

    @contextlib.contextmanager
    def applied(self, case: Case):
        """The working copy with `case` applied, restored after."""
        saved = self._apply(case)
        try:
            yield self.work
        finally:
            self._undo(saved, case)

    def _apply(self, case: Case) -> list[tuple[int, bytes]]:
        saved = []
        with open(self.work, "r+b") as fh:
            for at, data in case.patches:
                fh.seek(at)
                saved.append((at, fh.read(len(data))))
                fh.seek(at)
                fh.write(data)
            if case.truncate is not None:
                fh.truncate(case.truncate)
        return saved

    def _undo(self, saved, case: Case) -> None:
        with open(self.work, "r+b") as fh:
            for at, data in reversed(saved):
                fh.seek(at)
                fh.write(data)
            if case.truncate is not None:
                with open(self.base, "rb") as src:
                    src.seek(case.truncate)
                    fh.seek(case.truncate)
                    shutil.copyfileobj(src, fh, 1 << 22)

    def _check(self, case: Case) -> Outcome | None:
        try:
            check_model_file(self.work)
        except MentalEdgeError as exc:
            return Outcome(case.name, "refused", str(exc))
        except Exception as exc:  # the check itself must never fail any other way
            return Outcome(case.name, "traceback", f"{type(exc).__name__}: {exc}")
        return None

    def _load(self, case: Case) -> Outcome:
        self.loads += 1
        worker = self._worker()
        worker.stdin.write(str(self.work) + "\n")
        worker.stdin.flush()
        ready, _, _ = select.select([worker.stdout], [], [], self.timeout)
        if not ready:
            self.close()
            return Outcome(case.name, "hang", f"no answer in {self.timeout:.0f} s", "worker")
        line = worker.stdout.readline()
        if not line:
            code = worker.wait()
            self.worker = None
            return Outcome(case.name, "crash", f"worker ended with {code} on this file", "worker")
        answer = json.loads(line)
        return Outcome(case.name, answer["status"], answer["message"], "worker")

    def _worker(self) -> subprocess.Popen:
        if self.worker is None or self.worker.poll() is not None:
            env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
            self.worker = subprocess.Popen(
                [sys.executable, str(WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
        return self.worker

    def close(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker.wait()
            self.worker = None


def one_line(outcome: Outcome) -> bool:
    return "\n" not in outcome.message and outcome.message.strip() != ""
