"""How many CPU threads an engine should take: the cores this process may use, less those other work keeps busy.

llama.cpp's threads spin while they wait for each other, so an engine with more threads than there are free
cores does not share the machine gracefully: on this project's 2-core machine two runs of 2 threads each, started
together, took over 4x as long as the same two one after the other. So the default takes the cores that are free
now (measured over a fifth of a second from /proc/stat, the load average elsewhere), split among the engines one
command starts, and says so on stderr; a count the user gave is kept, with a warning when the load suggests fewer.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

SAMPLE_SECONDS = 0.2


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float:
    """Cores' worth of CPU time other processes use now, on the cores this process may use (it sleeps while
    it measures)."""
    first = _cpu_times()
    if first is None:
        return _load_average()
    time.sleep(seconds)
    second = _cpu_times()
    busy = 0.0
    for cpu, (total, idle) in second.items():
        total0, idle0 = first.get(cpu, (total, idle))
        if total > total0:
            busy += 1 - (idle - idle0) / (total - total0)
    return busy


def _cpu_times() -> dict[str, tuple[int, int]] | None:
    """(all, idle) jiffies of each core this process may use, from /proc/stat; None where there is no /proc."""
    try:
        allowed = {f"cpu{n}" for n in os.sched_getaffinity(0)}
        with open("/proc/stat") as fh:
            lines = [line.split() for line in fh if line.startswith("cpu")]
    except (AttributeError, OSError):
        return None
    times = {}
    for name, *values in lines:
        if name in allowed:
            fields = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            times[name] = (sum(fields), fields[3] + fields[4])
    return times or None


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


@dataclass(frozen=True)
class ThreadChoice:
    threads: int  # per engine
    cores: int
    busy: float
    note: str | None  # a line for stderr when the load changed or questions the choice


def choose_threads(requested: int | None, engines: int = 1, busy: float | None = None) -> ThreadChoice:
    """Threads for each of `engines` engines started by one command; see the module doc."""
    cores = usable_cores()
    busy = busy_cores() if busy is None else busy
    free = max(1, min(cores, cores - math.floor(busy + 0.5)))
    fair = max(1, free // engines)
    load = f"{busy:.1f} of {cores} cores are busy with other work"
    if requested is None:
        note = None
        if fair < max(1, cores // engines):
            note = f"{load}: using {fair} thread(s) per engine (--threads N to choose)"
        return ThreadChoice(fair, cores, busy, note)
    note = None
    if requested * engines > free:
        note = (
            f"{load}: --threads {requested} may run several times slower than --threads {fair} "
            "(llama.cpp's threads spin when their cores are taken)"
        )
    return ThreadChoice(requested, cores, busy, note)
