"""BART (BartForConditionalGeneration: bart-large, MentalBART) -> a CTranslate2 model folder, without torch.

llama.cpp has no BART, so MentalBART runs on CTranslate2. CTranslate2's own converter loads the model with
torch and transformers (and breaks on transformers 5), so the model is built here through its spec API from
the numpy arrays the checkpoint reader gives. The folder gets CTranslate2's model.bin and vocabulary, the
byte-level BPE tokenizer as tokenizer.json, and `mental_edge.json` (architecture, context, weight type, source).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint, read_config
from .errors import ConversionError
from .gguf_out import Progress

ARCHITECTURE = "BartForConditionalGeneration"
OUTTYPES = {"int8": "int8", "f16": "float16", "f32": "float32"}  # ours -> CTranslate2's quantization
INFO_FILE = "mental_edge.json"
# one embedding under four names (tied in BART); the first is the one the others fall back to
TIED = (
    "model.shared.weight",
    "model.encoder.embed_tokens.weight",
    "model.decoder.embed_tokens.weight",
    "lm_head.weight",
)
MISSING_CT2 = "CTranslate2 is not installed; BART models need it: pip install 'mental-edge[bart]'"


def import_ctranslate2():
    try:
        import ctranslate2
    except ImportError:
        raise ConversionError(MISSING_CT2) from None
    return ctranslate2


def is_bart_folder(folder) -> bool:
    """Whether the checkpoint folder's config.json names BART (a folder without one is left to the caller)."""
    path = Path(folder) / "config.json"
    return path.is_file() and (read_config(path).get("architectures") or [None])[0] == ARCHITECTURE


def convert_bart(
    src_dir,
    out_dir,
    outtype: str | None = "int8",
    source: str | None = None,
    revision: str | None = None,
    progress: Progress | None = None,
    tokenizer_from: str | os.PathLike | None = None,
    state_dict: str | os.PathLike | None = None,
) -> Path:
    """Write the CTranslate2 folder `out_dir` (which must not exist) and return its path; the tokenizer comes from
    `tokenizer_from` when given (a folder with the base model's tokenizer files), else from the checkpoint.
    `state_dict`: a torch state-dict file whose tensors replace the checkpoint's (BARTScore's ParaBank
    `bart_score.pth` on bart-large-cnn), read without running its pickle."""
    outtype = (outtype or "int8").lower()
    if outtype not in OUTTYPES:
        raise ConversionError(f"unknown output type {outtype!r} for BART: choose one of {', '.join(OUTTYPES)}")
    ckpt = Checkpoint.open(src_dir)
    if ckpt.architecture != ARCHITECTURE:
        raise ConversionError(f"{ckpt.folder}: not a BART checkpoint (config.json names {ckpt.architecture!r})")
    if state_dict is not None:
        ckpt = ckpt.with_state_dict(state_dict, tied=TIED)
    tokenizer = _tokenizer(Path(tokenizer_from) if tokenizer_from is not None else ckpt.folder)
    ct2 = import_ctranslate2()
    out = Path(out_dir)
    if out.exists():
        raise ConversionError(f"{out}: already exists (a CTranslate2 model is a new folder)")
    if not out.parent.is_dir():
        raise ConversionError(f"{out}: the output folder {out.parent} does not exist")
    spec = _spec(ct2, ckpt, progress)
    tokens = _vocabulary(tokenizer, int(ckpt.config["vocab_size"]))
    spec.register_source_vocabulary(tokens)
    spec.register_target_vocabulary(tokens)
    _set_special_tokens(spec, tokenizer, ckpt.config)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        spec.validate()
        spec.optimize(quantization=OUTTYPES[outtype])
        spec.save(str(tmp))
        tokenizer.save(str(tmp / "tokenizer.json"))
        info = {
            "architecture": "bart",
            "n_ctx": int(ckpt.config.get("max_position_embeddings", 1024)),
            "weights": outtype,
            "name": (source or ckpt.folder.resolve().name).rstrip("/").rsplit("/", 1)[-1],
            "source": source,
            "revision": revision,
            "state_dict": Path(state_dict).name if state_dict is not None else None,
            "n_params": _n_params(ckpt),
        }
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1))
        os.chmod(tmp, 0o777 & ~_umask())
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _n_params(ckpt: Checkpoint) -> int:
    return int(sum(np.prod(t.shape) for _, t in ckpt.tensors()))


# --- the tokenizer ---------------------------------------------------------------------------------------------


def _tokenizer(folder: Path):
    """BART's byte-level BPE as a `tokenizers.Tokenizer`: tokenizer.json, else vocab.json + merges.txt."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    if (folder / "tokenizer.json").is_file():
        try:
            return Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # the Rust library raises its own Exception type
            raise ConversionError(f"{folder / 'tokenizer.json'}: unreadable tokenizer ({exc})") from None
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        raise ConversionError(
            f"{folder}: no tokenizer found (looked for tokenizer.json, vocab.json + merges.txt): "
            "give the base model's tokenizer with --tokenizer-from FOLDER|REPO"
        )
    try:
        tokenizer = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    except Exception as exc:
        raise ConversionError(f"{vocab}: unreadable BPE vocabulary ({exc})") from None
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [t for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>") if tokenizer.token_to_id(t) is not None]
    )
    return tokenizer


def _vocabulary(tokenizer, size: int) -> list[str]:
    by_id = {i: t for t, i in tokenizer.get_vocab(with_added_tokens=True).items()}
    if max(by_id) >= size:
        raise ConversionError(f"config.json: vocab_size {size} is smaller than the tokenizer's {max(by_id) + 1} tokens")
    return [by_id.get(i, f"<unused{i}>") for i in range(size)]


def _set_special_tokens(spec, tokenizer, config: dict) -> None:
    def text(key: str, default: int) -> str:
        token_id = config.get(key, default)
        token = tokenizer.id_to_token(int(token_id)) if token_id is not None else None
        if token is None:
            raise ConversionError(f"config.json: {key} {token_id} is not in the tokenizer")
        return token

    spec.config.bos_token = text("bos_token_id", 0)
    spec.config.eos_token = text("eos_token_id", 2)
    spec.config.unk_token = tokenizer.id_to_token(3) or "<unk>"
    spec.config.decoder_start_token = text("decoder_start_token_id", 2)


# --- the weights -----------------------------------------------------------------------------------------------


def _check_config(config: dict) -> None:
    for key in ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "vocab_size"):
        if config.get(key) is None:
            raise ConversionError(f"config.json: missing field {key}")
    if config.get("encoder_attention_heads") != config.get(
        "decoder_attention_heads", config.get("encoder_attention_heads")
    ):
        raise ConversionError("config.json: encoder and decoder head counts differ (CTranslate2 needs one)")
    if config.get("normalize_before") or config.get("add_final_layer_norm"):
        raise ConversionError("config.json: pre-norm BART variants (mBART) are not supported")


def _spec(ct2, ckpt: Checkpoint, progress: Progress | None):
    from ctranslate2.specs import common_spec, transformer_spec

    config = ckpt.config
    _check_config(config)
    activation = str(config.get("activation_function", "gelu"))
    activations = {
        "gelu": common_spec.Activation.GELU,
        "relu": common_spec.Activation.RELU,
        "gelu_new": common_spec.Activation.GELUTanh,
        "swish": common_spec.Activation.SWISH,
        "silu": common_spec.Activation.SWISH,
    }
    if activation not in activations:
        raise ConversionError(f"config.json: activation_function {activation!r} is not supported")
    spec = transformer_spec.TransformerSpec.from_config(
        (int(config["encoder_layers"]), int(config["decoder_layers"])),
        int(config["encoder_attention_heads"]),
        pre_norm=False,
        activation=activations[activation],
        layernorm_embedding=True,
    )
    weights = _Weights(ckpt, progress)
    scale = float(np.sqrt(config["d_model"])) if config.get("scale_embedding") else 1.0
    _set_stack(spec.encoder, weights, "model.encoder", scale, cross=False)
    _set_stack(spec.decoder, weights, "model.decoder", scale, cross=True)
    spec.decoder.projection.weight = weights.get("lm_head.weight", "model.shared.weight")
    bias = weights.get("final_logits_bias", optional=True)
    if bias is not None and np.any(bias):
        spec.decoder.projection.bias = bias.reshape(-1)
    weights.check_all_used()
    return spec


def _set_stack(stack, weights, prefix: str, scale: float, cross: bool) -> None:
    embeddings = stack.embeddings[0] if isinstance(stack.embeddings, list) else stack.embeddings
    embeddings.weight = weights.get(f"{prefix}.embed_tokens.weight", "model.shared.weight")
    stack.scale_embeddings = scale
    stack.position_encodings.encodings = weights.get(f"{prefix}.embed_positions.weight")[2:]  # BART's offset
    _norm(stack.layernorm_embedding, weights, f"{prefix}.layernorm_embedding")
    for i, layer in enumerate(stack.layer):
        p = f"{prefix}.layers.{i}."
        _attention(layer.self_attention, weights, p + "self_attn", fused_kv_only=False)
        _norm(layer.self_attention.layer_norm, weights, p + "self_attn_layer_norm")
        if cross:
            _attention(layer.attention, weights, p + "encoder_attn", fused_kv_only=True)
            _norm(layer.attention.layer_norm, weights, p + "encoder_attn_layer_norm")
        _linear(layer.ffn.linear_0, weights, p + "fc1")
        _linear(layer.ffn.linear_1, weights, p + "fc2")
        _norm(layer.ffn.layer_norm, weights, p + "final_layer_norm")


def _attention(spec, weights, prefix: str, fused_kv_only: bool) -> None:
    """Self-attention: q, k, v fused in linear[0]; cross-attention: q in linear[0], k and v in linear[1]."""
    parts = {w: (weights.get(f"{prefix}.{w}_proj.weight"), weights.get(f"{prefix}.{w}_proj.bias")) for w in "qkv"}
    groups = [["q"], ["k", "v"]] if fused_kv_only else [["q", "k", "v"]]
    for linear, group in zip(spec.linear, groups):
        linear.weight = np.concatenate([parts[w][0] for w in group])
        linear.bias = np.concatenate([parts[w][1] for w in group])
    _linear(spec.linear[-1], weights, f"{prefix}.out_proj")


def _linear(spec, weights, prefix: str) -> None:
    spec.weight = weights.get(prefix + ".weight")
    spec.bias = weights.get(prefix + ".bias")


def _norm(spec, weights, prefix: str) -> None:
    spec.gamma = weights.get(prefix + ".weight")
    spec.beta = weights.get(prefix + ".bias")


class _Weights:
    """Checkpoint tensors by name, loaded as float32 on use; a missing one is a one-line error."""

    def __init__(self, ckpt: Checkpoint, progress: Progress | None):
        self._tensors = dict(ckpt.tensors())
        self._folder = ckpt.folder
        self._used: set[str] = set()
        self._progress = progress

    def get(self, *names: str, optional: bool = False):
        for name in names:
            if name in self._tensors:
                self._used.add(name)
                if self._progress:
                    self._progress(len(self._used), len(self._tensors), name)
                return np.asarray(self._tensors[name].load(), dtype=np.float32)
        if optional:
            return None
        raise ConversionError(f"{self._folder.name}: tensor {names[0]} is missing")

    def check_all_used(self) -> None:
        ignored = set(TIED)
        extra = sorted(set(self._tensors) - self._used - ignored)
        if extra:
            raise ConversionError(f"{self._folder.name}: tensor {extra[0]} is not part of a BART model")
