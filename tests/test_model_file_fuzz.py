"""The fuzz test of docs/model-files.md: seeded mutations of small real GGUF files of each supported architecture
(SmolLM2 Q4_1 for llama, tiny GLM-4 and T5 files converted here), each loaded as the CLI does: 0 crashes (signals),
0 hangs, 0 tracebacks, every refusal one line (tests/support/gguf_fuzz.py: what the check refuses is confirmed in
this process, what it passes is loaded and run in a worker subprocess). benchmarks/gguf_fuzz.py runs more."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from mental_edge.convert import convert_checkpoint
from support import glm_tiny
from support.gguf_fuzz import FuzzRun, cases, one_line
from support.seq2seq_tiny import write_t5

pytestmark = pytest.mark.slow  # torch builds the GLM and T5 checkpoints

PER_FILE = {"llama": 150, "chatglm": 200, "t5": 200}  # cases per file (SmolLM2's header takes longest to read)
FLIPS = 40


@pytest.fixture(scope="module")
def model_files(smollm2_gguf, imhi_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-models")
    texts = list(glm_tiny.CHINESE_TEXTS) * 3 + ["I feel sad and tired every day; work is stressful."] * 3
    ranks, merges = glm_tiny.train_ranks(texts, 100)
    config = glm_tiny.glm_config(ranks)
    glm_dir = glm_tiny.write_native(root / "glm", glm_tiny.native_state_dict(config), config, ranks, merges)
    return {
        "llama": smollm2_gguf,
        "chatglm": convert_checkpoint(glm_dir, root / "glm.gguf", outtype="f32"),
        "t5": convert_checkpoint(write_t5(root / "t5", imhi_dir), root / "t5.gguf", quant="Q8_0"),
    }


def _sample(all_cases, n: int, seed: int = 0):
    """Every hyperparameter case (0, 1, -1, max of each number) and every truncation, then a seeded sample."""
    must = [c for c in all_cases if "=" in c.name and ":" not in c.name or c.name.startswith("truncate")]
    rest = [c for c in all_cases if c not in must]
    return must + random.Random(seed).sample(rest, max(0, min(len(rest), n - len(must))))


@pytest.mark.parametrize("arch", ["llama", "chatglm", "t5"])
def test_no_mutated_file_crashes_hangs_or_tracebacks(model_files, arch, tmp_path):
    fuzz = FuzzRun(model_files[arch], tmp_path / "work.gguf", timeout=60)
    counts: Counter = Counter()
    failures = []
    try:
        for case in _sample(cases(model_files[arch], seed=0, flips=FLIPS), PER_FILE[arch]):
            outcome = fuzz.run(case)
            counts[outcome.status] += 1
            if outcome.status not in ("ran", "refused") or (outcome.status == "refused" and not one_line(outcome)):
                failures.append(f"{case.name}: {outcome.status} ({outcome.where}) {outcome.message[:300]}")
    finally:
        fuzz.close()
    print(f"{arch}: {sum(counts.values())} cases, {dict(counts)}, {fuzz.loads} loaded by the worker")
    assert not failures, "\n".join(failures)
    assert counts["refused"] > counts["ran"] > 0  # the harness both refused and ran files
