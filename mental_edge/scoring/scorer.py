"""Every score of explanation-reference pairs: BARTScore on the converted BART scorer, ROUGE and BLEU by overlap."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from mental_edge.scoring.overlap import overlap_scores

CHUNK = 64  # pairs per call to the scorer (progress is reported between calls)


class ExplanationScorer:
    """BARTScore (explanation as the source, reference as the target, as the benchmark's `score(generated,
    references)`) plus the overlap scores, for a batch of pairs."""

    def __init__(
        self, folder: str | Path, *, threads: int | None = None, batch_size: int = 16, compute_type: str = "default"
    ):
        """`compute_type`: CTranslate2's ("default": the folder's weights; "int8": faster, scores approximate)."""
        from mental_edge.engine.ctranslate2 import SequenceScorer

        self._bart = SequenceScorer(folder, threads=threads, compute_type=compute_type)
        self.batch_size = batch_size
        self.info = {**self._bart.info, "folder": str(folder), "max_tokens": self._bart.max_tokens}

    def score(self, pairs: Sequence[tuple[str, str]], on_progress: Callable[[int], None] | None = None) -> list[dict]:
        """Per pair (candidate, reference): bart_score, rouge1, rouge2, rougeL, bleu and bleu_stats."""
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))  # like lengths batched
        bart = [0.0] * len(pairs)
        for start in range(0, len(order), CHUNK):
            chunk = order[start : start + CHUNK]
            values = self._bart.score([pairs[i][0] for i in chunk], [pairs[i][1] for i in chunk],
                                      batch_size=self.batch_size)  # fmt: skip
            for i, value in zip(chunk, values):
                bart[i] = value
            if on_progress:
                on_progress(min(start + CHUNK, len(order)), len(order))
        return [{"bart_score": b, **overlap_scores(c, r)} for b, (c, r) in zip(bart, pairs)]

    def close(self) -> None:
        self._bart.close()
