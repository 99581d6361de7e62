"""How many requests to keep in flight, and how many cache cells to give them, from the model and the memory.

`choose` is a pure function of the model's per-token cache size, the context and the memory still free after
the weights are loaded; `available_memory` reads that figure (MemAvailable from /proc/meminfo on a CPU build, the
device's free memory on a GPU build). The engine calls both once, when it creates its context.

The policy (benchmarks/analysis_throughput.py --model 7b measures the defaults against --slots 4 and 16; its
figures are in docs/performance.md: 8 slots beat 4, 16 gain nothing on 8 posts, and 16 posts in flight need more
cells than a 7B's training context allows in all, so 8):
- the cache may take half of the memory left once RESERVE (llama.cpp's compute buffers, Python, the rest of the
  machine) is set aside, so that a 7B Q4_K_M on an 8 GiB machine stays under 6 GiB at its peak;
- every slot can hold a whole context (slots x n_ctx cells) when that fits, and never more than the training
  context in all (llama.cpp warns on stderr, past its log callback, when a unified cache is longer);
- fewer slots when the budget holds fewer whole contexts, down to MIN_CELLS_PER_SLOT each; one slot (the strict
  one-at-a-time path, one context of cells) when the budget holds no more than one context.
A `slots` given by the user is kept (only the cells follow the memory).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_SLOTS",
    "MAX_TRAIN_CONTEXT",
    "MIN_TRAIN_CONTEXT",
    "Sizing",
    "available_memory",
    "cache_bytes_per_token",
    "choose",
    "seq2seq_context",
]

DEFAULT_SLOTS = 8  # requests in flight when memory allows (chosen from the 7B shape's 4 / 8 / 16 figures above)
RESERVE = 1 << 30  # bytes kept free for compute buffers, the interpreter and the rest of the machine
CACHE_SHARE = 0.5  # of the memory left after RESERVE, what the cache may take
MIN_CELLS_PER_SLOT = 512  # a slot with less room than this would hold one short post at most
MEMINFO = Path("/proc/meminfo")
# The largest training context a model file may declare (engine/file_check.py refuses more): llama-cpp-python
# allocates that many tokens on every tokenize call, so the number must be one a machine can size (4 MiB here).
MAX_TRAIN_CONTEXT = 1 << 20
MIN_TRAIN_CONTEXT = 64  # and the smallest (the --ctx minimum; llama.cpp aborts on a context of 16 cells)
SEQ2SEQ_CTX = 2048  # an encoder-decoder's context when none is asked for, at most its training context


@dataclass(frozen=True)
class Sizing:
    slots: int
    cells: int
    why: str  # one phrase for the run's settings: what bounded the choice


def cache_bytes_per_token(meta: dict, key_bytes: int = 2, value_bytes: int = 2) -> int:
    """Bytes of keys and values one token takes in the cache, over all layers, from the GGUF metadata."""
    arch = meta.get("general.architecture", "")
    layers = int(meta.get(f"{arch}.block_count", 0) or 0)
    heads = int(meta.get(f"{arch}.attention.head_count", 1) or 1)
    kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads) or heads)
    width = int(meta.get(f"{arch}.embedding_length", 0) or 0)
    key_dim = int(meta.get(f"{arch}.attention.key_length", 0) or 0) or width // heads
    value_dim = int(meta.get(f"{arch}.attention.value_length", 0) or 0) or key_dim
    return max(layers * kv_heads * (key_dim * key_bytes + value_dim * value_bytes), 1)


def choose(
    *,
    per_token: int,
    n_ctx: int,
    n_ctx_train: int,
    available: int | None,
    slots: int | None = None,
    default_slots: int = DEFAULT_SLOTS,
) -> Sizing:
    """Slots and cache cells for one context. `available`: bytes free now (None: unknown, then the cache is sized
    as if 8 GiB were free). `slots`: the user's choice, or None for the default that fits."""
    free = 8 << 30 if available is None else available
    budget = max(int((free - RESERVE) * CACHE_SHARE), 0)
    fits = budget // max(per_token, 1)  # cells the memory allows
    ceiling = max(n_ctx, n_ctx_train)
    if slots is not None:
        if slots <= 1:
            return Sizing(1, n_ctx, "one slot asked")
        cells = max(n_ctx, min(n_ctx * slots, fits, ceiling))
        return Sizing(slots, cells, _why(cells, n_ctx * slots, fits, ceiling))
    if fits <= n_ctx:
        return Sizing(1, n_ctx, "memory for one context only")
    cells = min(n_ctx * default_slots, fits, ceiling)
    chosen = max(1, min(default_slots, cells // MIN_CELLS_PER_SLOT))
    if chosen == 1:
        return Sizing(1, n_ctx, "memory for one context only")
    return Sizing(chosen, max(cells, n_ctx), _why(cells, n_ctx * default_slots, fits, ceiling))


def seq2seq_context(*, requested: int | None, n_ctx_train: int, per_token: int, available: int | None) -> int:
    """An encoder-decoder's context (its encoder's input limit, its decoder's length limit and its batch): the one
    asked for or SEQ2SEQ_CTX, at most the training context, and never more cells than the cache budget holds."""
    free = 8 << 30 if available is None else available
    fits = max(int((free - RESERVE) * CACHE_SHARE), 0) // max(per_token, 1)
    return max(1, min(requested or SEQ2SEQ_CTX, n_ctx_train, max(fits, 64)))


def _why(cells: int, wanted: int, fits: int, ceiling: int) -> str:
    if cells >= wanted:
        return "a context per slot"
    return "memory" if fits <= ceiling else "the training context"


def available_memory(gpu: bool) -> int | None:
    """Bytes free for the cache now: the GPU's free memory on a GPU build, else MemAvailable; None if unknown."""
    if gpu:
        free = _device_free()
        if free is not None:
            return free
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _device_free() -> int | None:
    """The free memory of the first GPU device ggml knows (ggml_backend_dev_memory), or None."""
    try:
        import llama_cpp

        lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml.so"))
        lib.ggml_backend_dev_count.restype = ctypes.c_size_t
        lib.ggml_backend_dev_get.restype = ctypes.c_void_p
        lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p] + [ctypes.POINTER(ctypes.c_size_t)] * 2
        for i in range(lib.ggml_backend_dev_count()):
            dev = lib.ggml_backend_dev_get(i)
            if lib.ggml_backend_dev_type(dev) == 1:  # GGML_BACKEND_DEVICE_TYPE_GPU
                free, total = ctypes.c_size_t(), ctypes.c_size_t()
                lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
                return int(free.value)
    except (OSError, AttributeError):
        return None
    return None
