"""Slots and cache cells from the model's per-token cache size and the memory free (engine/sizing.py): the 7B on
an 8 GiB laptop, a machine too small for a second slot, a large machine, a small model, the user's --slots."""

import pytest

from mental_edge.engine import sizing
from mental_edge.engine.sizing import DEFAULT_SLOTS, RESERVE, available_memory, cache_bytes_per_token, choose

GIB = 1 << 30
LLAMA_7B = {  # LLaMA-2-7B's GGUF metadata (the synthetic 7B shape of benchmarks/memory.py has the same)
    "general.architecture": "llama",
    "llama.block_count": 32,
    "llama.attention.head_count": 32,
    "llama.attention.head_count_kv": 32,
    "llama.embedding_length": 4096,
    "llama.context_length": 4096,
}
SMOLLM2 = {
    "general.architecture": "llama",
    "llama.block_count": 30,
    "llama.attention.head_count": 9,
    "llama.attention.head_count_kv": 3,
    "llama.embedding_length": 576,
}
WEIGHTS_7B_Q4_K_M = int(3.53 * GIB)  # the synthetic file's size; a real MentaLLaMA-chat-7B Q4_K_M is 3.8 GiB


def test_per_token_cache_size_from_the_metadata():
    assert cache_bytes_per_token(LLAMA_7B) == 32 * 32 * 128 * 4 == 512 * 1024  # f16 keys and values
    assert cache_bytes_per_token(SMOLLM2) == 30 * 3 * 64 * 4  # grouped-query attention: 3 kv heads of 64
    assert cache_bytes_per_token(LLAMA_7B, value_bytes=1) == 32 * 32 * 128 * 3
    chatglm = {"general.architecture": "chatglm", "chatglm.block_count": 40, "chatglm.attention.head_count": 32}
    chatglm |= {"chatglm.attention.head_count_kv": 2, "chatglm.embedding_length": 4096}
    assert cache_bytes_per_token(chatglm) == 40 * 2 * 128 * 4


def test_7b_on_an_8_gib_machine_batches_and_stays_under_6_gib():
    per_token = cache_bytes_per_token(LLAMA_7B)
    free = 8 * GIB - WEIGHTS_7B_Q4_K_M - int(0.9 * GIB)  # MemAvailable once the weights are in and the OS runs
    got = choose(per_token=per_token, n_ctx=2048, n_ctx_train=4096, available=free)
    assert 2 <= got.slots < DEFAULT_SLOTS  # it batches, with fewer slots than a large machine gets
    assert got.cells >= 2048  # always a whole context
    cache = got.cells * per_token
    assert cache <= (free - RESERVE) / 2
    assert WEIGHTS_7B_Q4_K_M + cache + RESERVE / 2 < 6 * GIB  # weights, cache, compute buffers and Python
    assert got.why == "memory"


def test_a_machine_too_small_for_a_second_slot_gets_one_slot_and_one_context():
    per_token = cache_bytes_per_token(LLAMA_7B)
    for free in (0, GIB, int(2.5 * GIB), RESERVE + 2 * 2048 * per_token):  # the last: the cache share is one context
        got = choose(per_token=per_token, n_ctx=2048, n_ctx_train=4096, available=free)
        assert (got.slots, got.cells) == (1, 2048), free
        assert got.why == "memory for one context only"


def test_a_large_machine_gets_the_default_slots_within_the_training_context():
    per_token = cache_bytes_per_token(LLAMA_7B)
    got = choose(per_token=per_token, n_ctx=2048, n_ctx_train=4096, available=64 * GIB)
    assert got.slots == DEFAULT_SLOTS
    assert got.cells == 4096 and got.why == "the training context"  # llama.cpp warns past n_ctx_train
    small = choose(per_token=cache_bytes_per_token(SMOLLM2), n_ctx=1024, n_ctx_train=8192, available=16 * GIB)
    assert (small.slots, small.cells, small.why) == (DEFAULT_SLOTS, DEFAULT_SLOTS * 1024, "a context per slot")


def test_slots_follow_the_cells_the_memory_allows():
    per_token = cache_bytes_per_token(SMOLLM2)
    free = RESERVE + 2 * 1600 * per_token  # the cache share holds 1,600 cells: three slots of 512
    got = choose(per_token=per_token, n_ctx=1024, n_ctx_train=8192, available=free)
    assert (got.slots, got.cells) == (3, 1600)


def test_the_users_slots_are_kept_and_only_the_cells_follow_the_memory():
    per_token = cache_bytes_per_token(LLAMA_7B)
    big = choose(per_token=per_token, n_ctx=2048, n_ctx_train=4096, available=64 * GIB, slots=16)
    assert (big.slots, big.cells) == (16, 4096)
    tight = choose(per_token=per_token, n_ctx=2048, n_ctx_train=4096, available=2 * GIB, slots=4)
    assert (tight.slots, tight.cells) == (4, 2048)  # never less than one whole context
    assert choose(per_token=per_token, n_ctx=2048, n_ctx_train=4096, available=64 * GIB, slots=1).cells == 2048


def test_unknown_memory_is_sized_as_8_gib():
    per_token = cache_bytes_per_token(LLAMA_7B)
    unknown = choose(per_token=per_token, n_ctx=2048, n_ctx_train=4096, available=None)
    assert unknown == choose(per_token=per_token, n_ctx=2048, n_ctx_train=4096, available=8 * GIB)


@pytest.mark.parametrize(
    "text, want",
    [
        ("MemTotal:       24683584 kB\nMemFree:        19710536 kB\nMemAvailable:   22694704 kB\n", 22694704 * 1024),
        ("MemTotal:       24683584 kB\n", None),  # a kernel without the field
        ("MemAvailable:   lots\n", None),
    ],
)
def test_available_memory_reads_memavailable_on_a_cpu_build(tmp_path, monkeypatch, text, want):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(text)
    monkeypatch.setattr(sizing, "MEMINFO", meminfo)
    assert available_memory(gpu=False) == want


def test_available_memory_without_meminfo_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(sizing, "MEMINFO", tmp_path / "missing")
    assert available_memory(gpu=False) is None
