"""One thread owns the engine; every HTTP request's work goes through its queue.

On an engine that batches (its `batch_runner()`: llama.cpp with several slots) the thread runs one runner forever
over the queue, so requests from different clients share each step (continuous batching across requests). Other
engines take one request at a time. Results and streamed text go back through each job's `emit(kind, value)`,
called on the worker thread: ("text", piece), ("done", result) or ("error", message).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mental_edge.engine import IDLE, Engine, Request, RequestRunner, Result
from mental_edge.errors import MentalEdgeError

MAX_WAITING = 512  # requests queued beyond this are refused (503): the server is overloaded


class Busy(MentalEdgeError):
    """The queue is full."""


class TimedOut(MentalEdgeError):
    """A request ran past its deadline."""


@dataclass(eq=False)
class Job:
    req: Request
    emit: Callable[[str, object], None]
    queued_at: float = field(default_factory=time.monotonic)


class EngineWorker:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._inbox: queue.Queue[list[Job] | None] = queue.Queue()
        self._ready: list[Job] = []  # taken from the inbox, not yet given to the engine
        self._jobs: dict[int, Job] = {}  # id(request) -> job, for requests handed to the engine
        self._batcher: RequestRunner | None = None
        self._peak = 0  # peak_busy of runners replaced after a failure
        self.completed = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="engine-worker", daemon=True)

    # -- the HTTP side ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        for req in [j.req for j in list(self._jobs.values())]:
            req.cancelled = True
        self._inbox.put(None)
        self._thread.join(timeout)

    def submit(self, req: Request, emit: Callable[[str, object], None]) -> Job:
        return self.submit_all([req], emit)[0]

    def submit_all(self, reqs: list[Request], emit: Callable[[str, object], None]) -> list[Job]:
        """Queue requests as one unit: the engine finds them all waiting at once, as `analyze` offers a file's
        requests. (Batched scores depend slightly on where each request's tokens sit in the shared cache,
        which depends on when it arrives; together, an idle server gives the CLI's numbers exactly.)"""
        if self._inbox.qsize() >= MAX_WAITING:
            raise Busy(f"the server has {MAX_WAITING} requests waiting; try again later")
        if not self._thread.is_alive():
            raise MentalEdgeError("the engine worker is not running")
        jobs = [Job(req, emit) for req in reqs]
        self._inbox.put(jobs)
        return jobs

    def stats(self) -> dict:
        batcher = self._batcher
        return {
            "slots": self.engine.slots,
            "in_flight": batcher.busy if batcher else len(self._jobs),
            "peak_in_flight": max(self._peak, batcher.peak_busy) if batcher else min(self.completed, 1),
            "queued": self._inbox.qsize() + len(self._ready),
            "completed": self.completed,
            "failed": self.failed,
        }

    # -- the engine thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                for result in self._results():
                    self._finish(result)
                return  # the source ended: stop() was called
            except Exception as exc:  # noqa: BLE001 - the engine failed mid-batch: fail what it held, go on
                if self._batcher is not None:  # a fresh batcher: this one's slots still hold the failed requests
                    self._peak = max(self._peak, self._batcher.peak_busy)
                    self._batcher = None
                message = str(exc) if isinstance(exc, MentalEdgeError) else f"the engine failed ({type(exc).__name__})"
                for job in list(self._jobs.values()):
                    self._fail(job, message)

    def _results(self):
        self._batcher = self._batcher or self.engine.batch_runner()
        if self._batcher is not None:
            return self._batcher.run(self._source())
        return self.engine.run_requests(self._source())

    def _source(self):
        """Jobs' requests as the engine asks for them; IDLE when none waits while slots are busy."""
        while True:
            if not self._ready:
                if self._batcher is not None and self._batcher.busy:
                    try:
                        jobs = self._inbox.get_nowait()
                    except queue.Empty:
                        yield IDLE
                        continue
                else:
                    jobs = self._inbox.get()
                if jobs is None:
                    return
                self._ready = list(jobs)
            job = self._ready.pop(0)
            if job.req.cancelled:
                self._fail(job, "cancelled", count=False)
                continue
            try:
                self.engine.check_request(job.req)
            except MentalEdgeError as exc:
                self._fail(job, str(exc))
                continue
            self._jobs[id(job.req)] = job
            yield job.req

    def _finish(self, result: Result) -> None:
        job = self._jobs.pop(id(result.request), None)
        if job is None:
            return
        self.completed += 1
        _safe_emit(job, "done", result)

    def _fail(self, job: Job, message: str, count: bool = True) -> None:
        self._jobs.pop(id(job.req), None)
        self.failed += count
        _safe_emit(job, "error", message)


def _safe_emit(job: Job, kind: str, value) -> None:
    try:
        job.emit(kind, value)
    except Exception:  # noqa: BLE001 - a client that went away must not stop the engine
        pass


class SharedEngine:
    """The engine as `Analyzer` sees it inside the server: everything is the real engine's, except that
    `run_requests` hands the requests to the worker (batched with every other client's) and waits for them."""

    def __init__(self, worker: EngineWorker, timeout: float):
        self._worker = worker
        self._timeout = timeout

    def __getattr__(self, name):
        return getattr(self._worker.engine, name)

    def run_one(self, req: Request) -> Result:
        """Through the worker too: the engine is only ever used on its thread."""
        (result,) = self.run_requests([req])
        return result

    def run_requests(self, requests):
        deadline = time.monotonic() + self._timeout
        results: queue.Queue = queue.Queue()
        jobs = []
        try:
            jobs = self._worker.submit_all(list(requests), lambda kind, value: results.put((kind, value)))
            for _ in jobs:
                try:
                    kind, value = results.get(timeout=max(deadline - time.monotonic(), 0.001))
                except queue.Empty:
                    raise TimedOut(f"the request took longer than {self._timeout:g} s") from None
                if kind == "error":
                    raise MentalEdgeError(value)
                yield value
        finally:
            for job in jobs:
                job.req.cancelled = True  # finished ones ignore it; the rest stop at their next token
