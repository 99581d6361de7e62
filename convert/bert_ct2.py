"""A BERT sequence classifier (BertForSequenceClassification: the published MentalBERT classifiers of the IMHI
benchmark, one per dataset) -> a CTranslate2 encoder folder plus its classification head, without torch.

CTranslate2 runs BERT's encoder and pooler (the same runtime and spec-API converter as BART); the head, one
linear layer on the pooled output, is kept as `classifier.npz` and applied in numpy by the engine. The folder also
gets BERT's WordPiece tokenizer as tokenizer.json and `mental_edge.json` (architecture "bert-classifier", labels).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .bart_ct2 import import_ctranslate2
from .checkpoint import Checkpoint, read_config
from .errors import ConversionError

ARCHITECTURE = "BertForSequenceClassification"
INFO_FILE = "mental_edge.json"
HEAD_FILE = "classifier.npz"


def is_bert_classifier(folder) -> bool:
    path = Path(folder) / "config.json"
    return path.is_file() and (read_config(path).get("architectures") or [None])[0] == ARCHITECTURE


def convert_bert_classifier(src_dir, out_dir, outtype: str = "f32") -> Path:
    """Write the folder `out_dir` (which must not exist): model.bin (encoder and pooler), classifier.npz (the
    head), tokenizer.json and mental_edge.json; returns its path."""
    quantization = {"f32": "float32", "int8": "int8", "f16": "float16"}.get(outtype)
    if quantization is None:
        raise ConversionError(f"unknown output type {outtype!r} for a BERT classifier: choose f32, f16 or int8")
    ckpt = Checkpoint.open(src_dir)
    if ckpt.architecture != ARCHITECTURE:
        raise ConversionError(
            f"{ckpt.folder}: not a BERT sequence classifier (config.json names {ckpt.architecture!r})"
        )
    config = ckpt.config
    tokenizer = _tokenizer(ckpt.folder, config)
    ct2 = import_ctranslate2()
    out = Path(out_dir)
    if out.exists():
        raise ConversionError(f"{out}: already exists (a converted classifier is a new folder)")
    spec, head = _spec(ckpt)
    vocab = {i: t for t, i in tokenizer.get_vocab(with_added_tokens=True).items()}
    size = int(config["vocab_size"])
    spec.register_vocabulary([vocab.get(i, f"[unused-{i}]") for i in range(size)])
    spec.config.unk_token = "[UNK]"
    spec.config.bos_token, spec.config.eos_token = "[CLS]", "[SEP]"
    spec.config.layer_norm_epsilon = float(config.get("layer_norm_eps", 1e-12))
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        spec.validate()
        spec.optimize(quantization=quantization)
        spec.save(str(tmp))
        np.savez(tmp / HEAD_FILE, **head)
        tokenizer.save(str(tmp / "tokenizer.json"))
        labels = config.get("id2label") or {}
        info = {
            "architecture": "bert-classifier",
            "num_labels": int(head["weight"].shape[0]),
            "id2label": {str(k): v for k, v in labels.items()},
            "n_ctx": int(config.get("max_position_embeddings", 512)),
            "weights": outtype,
            "name": ckpt.folder.resolve().name,
        }
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    del ct2
    return out


def _tokenizer(folder: Path, config: dict):
    """BERT's WordPiece: tokenizer.json, else vocab.txt (lower-cased unless tokenizer_config.json says not)."""
    from tokenizers import Tokenizer
    from tokenizers.implementations import BertWordPieceTokenizer

    if (folder / "tokenizer.json").is_file():
        try:
            return Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # the Rust library raises its own Exception type
            raise ConversionError(f"{folder / 'tokenizer.json'}: unreadable tokenizer ({exc})") from None
    if not (folder / "vocab.txt").is_file():
        raise ConversionError(f"{folder}: no tokenizer found (looked for tokenizer.json and vocab.txt)")
    settings_path = folder / "tokenizer_config.json"
    settings = json.loads(settings_path.read_text(encoding="utf-8")) if settings_path.is_file() else {}
    lower = bool(settings.get("do_lower_case", True))
    wordpiece = BertWordPieceTokenizer(
        str(folder / "vocab.txt"), lowercase=lower, strip_accents=None if lower else False
    )
    return wordpiece._tokenizer


def _spec(ckpt: Checkpoint):
    from ctranslate2.specs import common_spec, transformer_spec

    config = ckpt.config
    for key in ("num_hidden_layers", "num_attention_heads", "vocab_size"):
        if config.get(key) is None:
            raise ConversionError(f"config.json: missing field {key}")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ConversionError(f"config.json: hidden_act {config['hidden_act']!r} is not supported")
    encoder = transformer_spec.TransformerEncoderSpec(
        int(config["num_hidden_layers"]),
        int(config["num_attention_heads"]),
        pre_norm=False,
        activation=common_spec.Activation.GELU,
        layernorm_embedding=True,
        num_source_embeddings=2,
        embeddings_merge=common_spec.EmbeddingsMerge.ADD,
    )
    spec = transformer_spec.TransformerEncoderModelSpec(encoder, pooling_layer=True)
    t = _Tensors(ckpt)
    spec.encoder.scale_embeddings = False
    spec.encoder.embeddings[0].weight = t.get("bert.embeddings.word_embeddings.weight")
    spec.encoder.embeddings[1].weight = t.get("bert.embeddings.token_type_embeddings.weight")
    spec.encoder.position_encodings.encodings = t.get("bert.embeddings.position_embeddings.weight")
    _norm(spec.encoder.layernorm_embedding, t, "bert.embeddings.LayerNorm")
    _linear(spec.pooler_dense, t, "bert.pooler.dense")
    for i, layer in enumerate(spec.encoder.layer):
        p = f"bert.encoder.layer.{i}."
        qkv = [p + f"attention.self.{w}" for w in ("query", "key", "value")]
        layer.self_attention.linear[0].weight = np.concatenate([t.get(q + ".weight") for q in qkv])
        layer.self_attention.linear[0].bias = np.concatenate([t.get(q + ".bias") for q in qkv])
        _linear(layer.self_attention.linear[1], t, p + "attention.output.dense")
        _norm(layer.self_attention.layer_norm, t, p + "attention.output.LayerNorm")
        _linear(layer.ffn.linear_0, t, p + "intermediate.dense")
        _linear(layer.ffn.linear_1, t, p + "output.dense")
        _norm(layer.ffn.layer_norm, t, p + "output.LayerNorm")
    head = {"weight": t.get("classifier.weight"), "bias": t.get("classifier.bias")}
    t.check_all_used()
    return spec, head


def _linear(spec, t, prefix: str) -> None:
    spec.weight, spec.bias = t.get(prefix + ".weight"), t.get(prefix + ".bias")


def _norm(spec, t, prefix: str) -> None:
    spec.gamma, spec.beta = t.get(prefix + ".weight"), t.get(prefix + ".bias")


class _Tensors:
    """Checkpoint tensors by name as float32; a missing one is one line; leftovers other than buffers refused."""

    def __init__(self, ckpt: Checkpoint):
        self._tensors, self._folder, self._used = dict(ckpt.tensors()), ckpt.folder, set()

    def get(self, name: str) -> np.ndarray:
        if name not in self._tensors:
            raise ConversionError(f"{self._folder.name}: tensor {name} is missing")
        self._used.add(name)
        return np.asarray(self._tensors[name].load(), dtype=np.float32)

    def check_all_used(self) -> None:
        extra = sorted(n for n in set(self._tensors) - self._used if not n.endswith("position_ids"))
        if extra:
            raise ConversionError(f"{self._folder.name}: tensor {extra[0]} is not part of a BERT classifier")
