"""T5 (MentalT5): English, trained on the IMHI completion form, the raw query as the encoder's source; no chat
layout of its own."""

from __future__ import annotations

from mental_edge.families.base import RAW, Family, FileShape, HubModel

FAMILY = Family(
    "t5",
    language="en",
    form="completion",
    query_format=RAW,
    engine="llama.cpp-t5",
    checkpoints={"T5ForConditionalGeneration": "seq2seq"},
    hub_models=(HubModel("mentalt5", "Tianlin668/MentalT5", "Q8_0"),),
    file_shape=FileShape(
        blocks={"block_count": "enc.blk.", "decoder_block_count": "dec.blk."},
        required=(
            "context_length",
            "embedding_length",
            "feed_forward_length",
            "attention.head_count",
            "attention.key_length",
            "attention.relative_buckets_count",
        ),
        dims={
            "embedding_length": ("token_embd.weight", 0),
            "vocab_size": ("token_embd.weight", 1),
            "feed_forward_length": ("enc.blk.0.ffn_down.weight", 0),
            "attention.relative_buckets_count": ("enc.blk.0.attn_rel_b.weight", 1),
        },
        tokenizers=("t5",),  # SentencePiece unigram
    ),
)
