"""Tiny random T5 and BART checkpoints with tokenizers trained at test time on IMHI posts (tests only).

T5: a SentencePiece unigram model (nmt_nfkc normalization, so the precompiled character map is exercised)
saved as spiece.model with transformers' T5Tokenizer files. BART: a byte-level BPE trained with `tokenizers`,
saved as vocab.json + merges.txt (the files bart-large ships) plus tokenizer.json.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from mental_edge.engine import Segment
from mental_edge.prompting import load_tasks

IMHI_FAMILIES = ("DR", "dreaddit", "Irf", "MultiWD", "SAD", "CAMS")


def imhi_queries(imhi_dir: Path, per_family: int = 6) -> list[str]:
    """Completion-form queries from the IMHI test files (the first rows of each family)."""
    queries = []
    for family in IMHI_FAMILIES:
        with open(imhi_dir / "test_complete" / f"{family}.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))[:per_family]
        queries += [row["query"] for row in rows]
    return queries


def _training_text(imhi_dir: Path) -> list[str]:
    lines = []
    for family in IMHI_FAMILIES:
        with open(imhi_dir / "test_complete" / f"{family}.csv", newline="", encoding="utf-8") as fh:
            for row in list(csv.DictReader(fh))[:60]:
                lines += [row["query"], row[list(row)[1]]]
    return lines


def write_t5(folder: Path, imhi_dir: Path, seed: int = 1, tie: bool = True, std: float = 0.2) -> Path:
    """A 2+2-layer T5 (d_model 64) with a 600-piece unigram vocabulary, as save_pretrained writes it."""
    import sentencepiece as spm
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "train.txt"
    text.write_text("\n".join(_training_text(imhi_dir)), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(folder / "spiece"),
        vocab_size=600,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        minloglevel=2,
        normalization_rule_name="nmt_nfkc",
    )
    text.unlink()
    (folder / "spiece.vocab").unlink()
    T5Tokenizer.from_pretrained(folder).save_pretrained(folder)  # reads spiece.model (needs protobuf)
    config = T5Config(
        vocab_size=704,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="relu",
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=tie,
        n_positions=512,
        architectures=["T5ForConditionalGeneration"],
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    with torch.no_grad():  # T5's own init is so flat that greedy decoding repeats one token: spread it
        for name, param in model.named_parameters():
            if "layer_norm" in name:
                param.uniform_(0.5, 1.5)
            elif name != "shared.weight":
                param.normal_(0, std)
    model.save_pretrained(folder)
    return folder


def write_bart(folder: Path, imhi_dir: Path, seed: int = 0, positions: int = 512) -> Path:
    """A 2+2-layer BART (d_model 64) with a 700-token byte-level BPE, in bart-large's file layout (`positions`:
    max_position_embeddings; bart-large has 1,024)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import BartConfig, BartForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        _training_text(imhi_dir),
        vocab_size=700,
        min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.save_model(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text())
    from transformers import BartTokenizer

    BartTokenizer.from_pretrained(folder).save_pretrained(folder)  # from vocab.json + merges.txt
    config = BartConfig(
        vocab_size=len(vocab),
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=positions,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=0,
        forced_eos_token_id=2,
        scale_embedding=False,
        architectures=["BartForConditionalGeneration"],
    )
    torch.manual_seed(seed)
    model = BartForConditionalGeneration(config)
    with torch.no_grad():  # random init leaves biases and the logits bias at zero: make them count
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.02)
        model.final_logits_bias.normal_(0, 0.5)
    model.save_pretrained(folder)
    # bart-large's generation defaults (beam search, forced tokens, no repeated trigrams), which a
    # temperature-0 run must not follow
    generation = json.loads((folder / "generation_config.json").read_text())
    generation.update(
        num_beams=4,
        no_repeat_ngram_size=3,
        early_stopping=True,
        length_penalty=2.0,
        forced_bos_token_id=0,
        forced_eos_token_id=2,
        min_length=12,
        max_length=142,
    )
    (folder / "generation_config.json").write_text(json.dumps(generation))
    return folder


# -- checks shared by the T5 and BART tests ---------------------------------------------------------------


def source_tokens(engine, query: str) -> list[int]:
    """A query as the encoder reads it (the model's own additions: T5's trailing </s>, BART's <s>...</s>)."""
    return engine.tokenize_segments([Segment(query)], add_bos=True)


def hf_answer_scores(model, source, continuations, decoder_prefix) -> list[float]:
    """transformers' log P(continuation | source), the decoder fed `decoder_prefix` first (T5: its start token;
    BART: </s> <s>), so the continuation is scored from the prefix's last position on."""
    out = []
    skip = len(decoder_prefix) - 1
    with torch.no_grad():
        for cont in continuations:
            decoder = torch.tensor([[*decoder_prefix, *cont[:-1]]])
            logp = model(input_ids=torch.tensor([source]), decoder_input_ids=decoder).logits.log_softmax(-1)[0, skip:]
            out.append(float(logp[torch.arange(len(cont)), torch.tensor(cont)].sum()))
    return out


def quantized_agreement(engines, queries, quantized: str) -> tuple[int, int, int]:
    """Over the IMHI completion queries that fit the encoder: how often the `quantized` engine picks the f32
    engine's label (the task's answer sentences scored) and gives its greedy 8 tokens; (labels, greedy, total)."""
    tasks = load_tasks()
    labels = greedy = total = 0
    for query in queries:
        source = source_tokens(engines["f32"], query)
        if len(source) > engines["f32"].n_ctx:
            continue
        task, _post = tasks.parse_query(query, "completion")
        answers = [engines["f32"].tokenize(task.answer(label, "completion")) for label in task.labels]
        picks = [int(np.argmax(engines[k].score(source, answers))) for k in ("f32", quantized)]
        texts = [engines[k].generate(source, max_tokens=8).text() for k in ("f32", quantized)]
        labels += picks[0] == picks[1]
        greedy += texts[0] == texts[1]
        total += 1
    return labels, greedy, total
