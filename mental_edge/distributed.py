"""Scale-out on Ray: `analyze --ray ADDRESS` spreads the rows over Ray actors, each holding one engine.

The driver (the `analyze` process) reads the input, leaves out what a resumed output already holds, and
sends the rows in small chunks to the actors. Each actor loads the model once (from a path every node can
see) and runs the ordinary runner (`runner.run_analysis`) on its chunks, so its records are those of a
single-machine run; the driver writes them in input order through the caller's writer, and `--resume`
works as before.

A worker that dies (its process killed, its node lost) costs only its chunks in flight: they go back to the
front of the queue, for the other workers, and a fresh worker takes its place (at most as many fresh ones
as the run started with). A chunk's records are written once, and a record whose (id, task) is already
written is dropped, so nothing is lost and nothing is written twice.

Post text travels through Ray's object store (and may be spilled to a node's disk under memory pressure):
run it on machines you would trust with the posts. Joining a cluster goes through `ray_auth`: the token found
the way Ray documents it, a refusal for want of it said in one line, and a cluster that does not enforce token
authentication refused unless the caller allows it (`allow_unauthenticated`, recorded in `run.ray.auth`).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mental_edge import ray_auth, store
from mental_edge.analysis.runner import RunSummary, work_left
from mental_edge.api.loading import find_model
from mental_edge.api.model import Model, load
from mental_edge.engine import threads as cpu
from mental_edge.errors import MentalEdgeError
from mental_edge.families import family_for
from mental_edge.io.readers import InputRow
from mental_edge.prompting import Task, TaskSet

CHUNK_ROWS = 8  # rows per chunk: small, so a lost worker costs little, yet enough to fill an engine's slots
CHUNKS_PER_WORKER = 2  # one running and one waiting, so a worker never idles between chunks
MISSING_RAY = "--ray needs Ray, an optional extra: pip install 'mental-edge[ray]'"


@dataclass(frozen=True)
class ModelSpec:
    """How each worker opens the model: a path every node sees, and facts to check it has the same file."""

    path: str
    name: str | None
    size: int | None  # None for a model folder
    sha256: str | None
    options: dict  # ctx, threads, gpu_layers, slots, exact, allow_architectures: `load`'s keywords


@dataclass
class _Chunk:
    index: int
    rows: list[InputRow]
    done: set[tuple[str, str]]  # the records of these rows a resumed output already holds
    covered: int  # input rows it stands for, the fully done ones before it included (for progress)


@dataclass(eq=False)
class _Slot:
    """A worker as the driver sees it: its actor handle and the chunks it holds."""

    actor: object
    busy: int = 0  # chunks sent to it and not yet back


def model_spec(
    model: str | None, n_ctx=None, threads=None, gpu_layers=None, slots=None, exact=False, allow_architectures=()
) -> ModelSpec:
    """Resolve a store name or path on the driver (api.loading.find_model) into what the workers load."""
    path, entry = find_model(model)
    path = path.resolve()
    if path.is_file():
        size, digest = path.stat().st_size, (entry.sha256 if entry and entry.sha256 else store.sha256_of(path))
    else:
        size, digest = None, entry.sha256 if entry else None
    options = {"ctx": n_ctx, "threads": threads, "gpu_layers": gpu_layers, "slots": slots, "exact": exact}
    options["allow_architectures"] = tuple(allow_architectures)
    return ModelSpec(str(path), entry.name if entry else None, size, digest, options)


class RayAnalysis:
    """A pool of Ray actors analysing rows; `run_analysis` takes the arguments of `runner.run_analysis`.

    `address` is a Ray address (`auto`, `HOST:PORT`, `ray://HOST:10001`) or `local` to start a Ray instance
    on this machine (an already connected Ray session is used as it is). A cluster whose nodes do not enforce
    Ray's token authentication is refused unless `allow_unauthenticated`. Use it as a context manager: the
    workers, and a local instance it started, end with it.
    """

    def __init__(
        self,
        address: str,
        spec: ModelSpec,
        settings: dict,
        workers: int | None = None,
        allow_unauthenticated: bool = False,
    ):
        ray_auth.prepare(address)
        self.ray = _import_ray()
        self.address, self.spec, self.settings = address, spec, settings
        self.started = _connect(self.ray, address, workers)
        self.lost = 0  # workers that died during the run
        self.retried = 0  # chunks sent again after their worker died
        self._slots: list[_Slot] = []
        self._retry: deque[_Chunk] = deque()  # chunks whose worker died, to send again first
        self._pulled = 0  # chunks read from the input so far in this run
        try:
            modes, driver = self._node_modes(), ray_auth.node_mode()
            self.auth = ray_auth.check_enforced(address, modes, allow_unauthenticated, driver)
            self.workers = workers or len([n for n in self.ray.nodes() if n.get("Alive")])
            if address == "local":  # the workers share this machine's free cores
                choice = cpu.choose_threads(spec.options["threads"], engines=self.workers)
                if choice.note:
                    print(f"mental-edge: {choice.note}", file=sys.stderr)
                threads = choice.threads
                self.spec = ModelSpec(**{**spec.__dict__, "options": {**spec.options, "threads": threads}})
            self._check_resources()
            self._slots = [_Slot(self._new_actor()) for _ in range(self.workers)]
            facts = self._get([s.actor.ready.remote() for s in self._slots])
        except _WorkerLost as exc:
            self.close()
            raise MentalEdgeError(f"a Ray worker died while loading the model: {_first_line(exc)}") from None
        except BaseException:
            self.close()
            raise
        self.architecture = facts[0]["architecture"]
        self.nodes = sorted({f["node"] for f in facts})

    @property
    def language(self) -> str:
        return family_for(self.architecture).language

    def report(self) -> str:
        """One line on where the run went, and on workers lost, for the end of `analyze`."""
        line = f"ran on Ray: {self.workers} workers on {len(self.nodes)} node(s)"
        if self.auth != "token":
            line += " (a cluster without token authentication, as allowed)"
        if self.lost:
            line += f"; {self.lost} worker(s) lost, {self.retried} chunk(s) of theirs redone by others"
        return line

    # -- running ----------------------------------------------------------------------------------

    def run_analysis(
        self,
        rows: Iterable[InputRow],
        tasks: Sequence[Task],
        *,
        taskset: TaskSet | None = None,
        done: set[tuple[str, str]] = frozenset(),
        write: Callable[[dict], None] = lambda r: None,
        limit: int | None = None,
        on_row: Callable[[], None] | None = None,
    ) -> RunSummary:
        """Analyse the rows on the workers and `write` the records in input order (see the module docstring)."""
        summary = RunSummary()
        self._retry.clear()
        self._pulled = 0
        job = self.ray.put((list(tasks), taskset))
        source = _chunks(rows, tasks, taskset, done, limit, summary)
        written = _Written(done, write, summary, on_row, {"workers": self.workers, "auth": self.auth})
        in_flight: dict = {}  # object ref -> (slot, chunk)
        while True:
            for slot, chunk in self._dispatch(source, written):
                in_flight[slot.actor.analyze.remote(job, chunk.rows, chunk.done)] = (slot, chunk)
                slot.busy += 1
            written.flush()
            if not in_flight:
                return summary
            (ref,), _ = self.ray.wait(list(in_flight), num_returns=1)
            slot, chunk = in_flight.pop(ref)
            slot.busy -= 1
            try:
                written.finished[chunk.index] = (chunk, *self._get(ref))
            except _WorkerLost:
                self._replace(slot)
                self._retry.appendleft(chunk)
                self.retried += 1

    def _dispatch(self, source: Iterator[_Chunk], written: _Written) -> Iterator[tuple[_Slot, _Chunk]]:
        """(worker, chunk) pairs while a worker has room: retried chunks first, then new ones, reading at
        most `window` chunks ahead of the next one to write (memory stays bounded behind a slow chunk)."""
        window = 2 * CHUNKS_PER_WORKER * self.workers
        while True:
            slot = min(self._slots, key=lambda s: s.busy)
            if slot.busy >= CHUNKS_PER_WORKER:
                return
            if self._retry:
                yield slot, self._retry.popleft()
                continue
            if self._pulled - written.next >= window:
                return
            chunk = next(source, None)
            if chunk is None:
                return
            self._pulled += 1
            if chunk.rows:
                yield slot, chunk
            else:  # rows a resumed output already holds: nothing to send
                written.finished[chunk.index] = (chunk, "", [])

    # -- workers ----------------------------------------------------------------------------------

    def _new_actor(self):
        options = {"num_cpus": self.spec.options["threads"] or 1, "max_restarts": 0}
        if self.address != "local":
            options["scheduling_strategy"] = "SPREAD"  # one engine per node before two on one
        return self.ray.remote(_Worker).options(**options).remote(self.spec, self.settings)

    def _replace(self, slot: _Slot) -> None:
        """A dead worker's place goes to a fresh one, while the run has replacements left."""
        if slot not in self._slots:  # already replaced, when its first chunk failed
            return
        self.lost += 1
        self._slots.remove(slot)
        if self.lost <= self.workers:
            self._slots.append(_Slot(self._new_actor()))
        if not self._slots:
            raise MentalEdgeError(
                f"all Ray workers were lost ({self.lost}); what was finished is in the output: run again with --resume"
            )

    def _get(self, refs):
        """ray.get, with a worker's own MentalEdgeError as ours and a dead worker as _WorkerLost."""
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayActorError as exc:
            raise _WorkerLost(str(exc)) from None
        except self.ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, MentalEdgeError):
                raise MentalEdgeError(str(exc.cause)) from None
            raise

    def _node_modes(self) -> list[str]:
        """Each live node's Ray authentication mode, from a tiny task pinned to it (before any post is sent)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        check = self.ray.remote(num_cpus=0)(ray_auth.node_mode)
        nodes = [n["NodeID"] for n in self.ray.nodes() if n.get("Alive")]
        pinned = [NodeAffinitySchedulingStrategy(node, soft=False) for node in nodes]
        return self.ray.get([check.options(scheduling_strategy=where).remote() for where in pinned])

    def _check_resources(self) -> None:
        need = self.workers * (self.spec.options["threads"] or 1)
        have = self.ray.cluster_resources().get("CPU", 0)
        if need > have:
            raise MentalEdgeError(
                f"the Ray cluster at {self.address} has {have:g} CPUs, too few for "
                f"{self.workers} workers of {need // self.workers} thread(s): "
                f"lower --ray-workers or --threads"
            )

    def close(self) -> None:
        for slot in self._slots:
            self.ray.kill(slot.actor)
        self._slots = []
        if self.started:
            self.ray.shutdown()
            self.started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class _WorkerLost(Exception):
    """A worker's process or node died while it held a chunk."""


class _Written:
    """Writes finished chunks in input order, each record once, and keeps the run's counts."""

    def __init__(self, done, write, summary: RunSummary, on_row, ray_info: dict):
        self.done, self.write, self.summary, self.on_row, self.ray_info = done, write, summary, on_row, ray_info
        self.keys: set[tuple[str, str]] = set()
        self.finished: dict[int, tuple[_Chunk, str, list[dict]]] = {}  # chunk index -> (chunk, node, records)
        self.next = 0  # the index of the next chunk to write

    def flush(self) -> None:
        while self.next in self.finished:
            chunk, node, records = self.finished.pop(self.next)
            for record in records:
                self._one(record, node)
            for _ in range(chunk.covered if self.on_row else 0):
                self.on_row()
            self.next += 1

    def _one(self, record: dict, node: str) -> None:
        key = (str(record["id"]), str(record["task"]))
        if key in self.done or key in self.keys:
            return
        self.keys.add(key)
        record["run"] = {**record["run"], "ray": {**self.ray_info, "node": node}}
        self.write(record)
        self.summary.count(record)


def _chunks(rows, tasks, taskset, done, limit, summary: RunSummary) -> Iterator[_Chunk]:
    """Rows with work left, CHUNK_ROWS at a time; rows a resumed output fully holds are counted, not sent."""
    by_id = defaultdict(set)
    for row_id, task in done:
        by_id[row_id].add(task)
    batch: list[InputRow] = []
    index = covered = 0
    for row in rows:
        if limit is not None and summary.rows >= limit:
            break
        summary.rows += 1
        covered += 1
        needed, skipped = work_left(row, tasks, taskset, done)
        summary.skipped += skipped
        if needed:
            batch.append(row)
        if len(batch) == CHUNK_ROWS:
            yield _Chunk(index, batch, {(r.id, t) for r in batch for t in by_id.get(r.id, ())}, covered)
            index, batch, covered = index + 1, [], 0
    if batch or covered:
        yield _Chunk(index, batch, {(r.id, t) for r in batch for t in by_id.get(r.id, ())}, covered)


class _Worker:
    """A Ray actor: one engine, loaded on first use, running the ordinary runner on chunks of rows."""

    def __init__(self, spec: ModelSpec, settings: dict):
        self.spec, self.settings = spec, settings
        self.model: Model | None = None
        self.node = socket.gethostname()

    def ready(self) -> dict:
        if self.model is None:
            self.model = _load(self.spec, self.node)
        return {"node": self.node, "architecture": self.model.info.architecture}

    def analyze(self, job, rows: list[InputRow], done: set) -> tuple[str, list[dict]]:
        self.ready()
        tasks, taskset = job
        records = self.model.iter_rows(rows, tasks, taskset=taskset, done=done, **self.settings)
        return self.node, [record.to_dict() for record in records]


def _load(spec: ModelSpec, node: str) -> Model:
    """The engine, after checking that this node sees the driver's model file."""
    path = Path(spec.path)
    where = "the model must be at the same path on every node, or on a shared filesystem"
    if not path.exists():
        raise MentalEdgeError(f"Ray worker on {node}: {path}: no such model file ({where})")
    if spec.size is not None and path.stat().st_size != spec.size:
        raise MentalEdgeError(
            f"Ray worker on {node}: {path} is not the driver's file "
            f"({path.stat().st_size} bytes, expected {spec.size}; {where})"
        )
    model = load(path, **spec.options)
    if spec.name:
        model.info.name = spec.name  # the driver's store name, as a run on one machine records it
    if spec.sha256:
        model.info.sha256 = spec.sha256  # hashed once by the driver (or the store), not on every node
    return model


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MentalEdgeError(MISSING_RAY) from None
    return ray


def _connect(ray, address: str, workers: int | None) -> bool:
    """Join (or, for `local`, start) a Ray cluster; True when this call started the session."""
    if ray.is_initialized():
        return False
    _check_reachable(address)
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        with ray_auth.quiet_stderr():
            if address == "local":
                cpus = max(os.cpu_count() or 1, workers or 1)
                ray.init(address="local", num_cpus=cpus, include_dashboard=False, **quiet)
            else:
                ray.init(address=address, **quiet)
    except Exception as exc:  # Ray's own kinds vary: ConnectionError, RuntimeError, AuthenticationError...
        refused = ray_auth.refusal(address, exc)
        if refused is not None:
            raise refused from None
        if isinstance(exc, (ConnectionError, RuntimeError, ValueError)):
            raise MentalEdgeError(f"cannot reach the Ray cluster at {address}: {_first_line(exc)}") from None
        raise
    return True


def _check_reachable(address: str) -> None:
    """A HOST:PORT nothing answers on fails here at once (Ray itself would keep retrying for minutes)."""
    if address in ("local", "auto") or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return  # Ray says what is wrong with it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise MentalEdgeError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
