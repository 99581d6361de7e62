"""The reference side of `mental-edge verify`: a Hugging Face checkpoint run by transformers (the `verify` extra).

Imported by the verify command alone, so that nothing else ever loads torch. No code shipped with a checkpoint
runs (`trust_remote_code` is never set): GLM-4's remote-code layout (THUDM's ChatGLMModel) is mapped onto
transformers' own GlmForCausalLM in memory; LLaMA, T5 and BART load as transformers' own classes.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mental_edge.engine import Seq2SeqPrompt
from mental_edge.errors import MentalEdgeError
from mental_edge.families import checkpoint_layouts

MISSING_EXTRA = "the reference check needs torch and transformers: pip install 'mental-edge[verify]'"

LAYOUTS = checkpoint_layouts()  # config.architectures[0] -> (the model file's architecture, how it loads)


def read_config(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise MentalEdgeError(f"{folder}: no config.json, so not a Hugging Face checkpoint folder")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise MentalEdgeError(f"{path}: not valid JSON ({exc})") from None


def layout_of(folder: Path) -> tuple[str, str, str]:
    """(config architecture, model file architecture it converts to, loading kind); one line when unknown."""
    config = read_config(folder)
    name = (config.get("architectures") or ["(none)"])[0]
    if name not in LAYOUTS:
        known = ", ".join(LAYOUTS)
        raise MentalEdgeError(f"{folder}: the layout {name} cannot be checked (transformers classes exist for {known})")
    return (name, *LAYOUTS[name])


def config_hparams(folder: Path) -> dict:
    """Layers and width from config.json (no torch), to hold against the model file's."""
    config = read_config(folder)
    layers = config.get("num_hidden_layers") or config.get("num_layers")
    width = config.get("hidden_size") or config.get("d_model")
    return {"layers": layers, "width": width}


def _torch():
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError:
        raise MentalEdgeError(MISSING_EXTRA) from None
    return torch


def _quiet_transformers() -> None:
    """No progress bars or advice from transformers on the user's terminal (the figures are the output)."""
    import warnings

    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.nn.modules.module")


def check_extra() -> None:
    """One line before anything runs when torch or transformers is missing."""
    _torch()


class Reference:
    """A checkpoint in transformers, with the two things verify asks of any model: logits at every position of
    a prompt, and the log-probability of each continuation."""

    def __init__(self, folder: Path, *, device: str | None = None, dtype: str = "float32"):
        torch = _torch()
        self.folder = Path(folder)
        self.name, self.architecture, self.kind = layout_of(self.folder)
        self.config = read_config(self.folder)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._dtype = {"float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}[dtype]
        _quiet_transformers()
        self.model = self._load().to(self.device).eval()
        self.encoder_decoder = self.kind in ("seq2seq", "bart")
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self._start = self._decoder_start() if self.encoder_decoder else []

    def _decoder_start(self) -> list[int]:
        """T5's decoder starts from its start token; BART's as it was fine-tuned, `</s> <s>` (the engine's)."""
        cfg = self.model.config
        return [cfg.decoder_start_token_id] + ([cfg.bos_token_id] if self.kind == "bart" else [])

    def _load(self):
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        if self.kind == "glm-remote":
            return glm_from_remote(self.folder, self.config, self._dtype)
        auto = AutoModelForCausalLM if self.kind == "causal" else AutoModelForSeq2SeqLM
        try:
            return auto.from_pretrained(self.folder, dtype=self._dtype, trust_remote_code=False)
        except Exception as exc:  # transformers, safetensors and torch each raise their own kinds
            raise MentalEdgeError(f"{self.folder}: transformers could not load it ({_first_line(exc)})") from None

    def close(self) -> None:
        torch = _torch()
        del self.model
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    # -- what verify asks ------------------------------------------------------------------------

    def prompt_logits(self, tokens) -> np.ndarray:
        """Logits at every position: of the prompt for a decoder-only model; for an encoder-decoder model, of the
        decoder reading its start tokens and then the target (one row per target token, plus the next)."""
        torch = _torch()
        with torch.no_grad():
            if isinstance(tokens, Seq2SeqPrompt):
                logits = self._decoder_logits(tokens.source, list(tokens.target))
                logits = logits[len(self._start) - 1 :]
            else:
                logits = self.model(self._ids(tokens)).logits[0]
        return logits.float().cpu().numpy()

    def score(self, prompt: Sequence[int], continuations: Sequence[Sequence[int]]) -> list[float]:
        torch = _torch()
        with torch.no_grad():
            if self.encoder_decoder:
                return [self._seq2seq_score(prompt, list(c)) for c in continuations]
            return self._causal_scores(prompt, continuations)

    def _ids(self, tokens):
        torch = _torch()
        return torch.tensor([list(tokens)], dtype=torch.long, device=self.device)

    def _decoder_logits(self, source, target: list[int]):
        out = self.model(input_ids=self._ids(source), decoder_input_ids=self._ids(self._start + target))
        return out.logits[0]

    def _seq2seq_score(self, source, cont: list[int]) -> float:
        if not cont:
            return 0.0
        logits = self._decoder_logits(source, cont[:-1])[len(self._start) - 1 :]
        rows = logits.float().log_softmax(-1)
        return float(rows[range(len(cont)), cont].sum())

    def _causal_scores(self, prompt, continuations) -> list[float]:
        """The prompt read once; each continuation on a copy of its cache."""
        out = self.model(self._ids(prompt), use_cache=True)
        first = out.logits[0, -1].float().log_softmax(-1)
        scores = []
        for cont in continuations:
            cont = list(cont)
            total = float(first[cont[0]]) if cont else 0.0
            if len(cont) > 1:
                more = self.model(self._ids(cont[:-1]), past_key_values=copy.deepcopy(out.past_key_values))
                rows = more.logits[0].float().log_softmax(-1)
                total += float(rows[range(len(cont) - 1), cont[1:]].sum())
            scores.append(total)
        return scores


# ---------------------------------------------------------------- GLM-4's remote-code layout


def glm_config(config: dict):
    """transformers' GlmConfig for THUDM's ChatGLMModel config.json; one line for a variant it does not cover."""
    from transformers import GlmConfig

    unsupported = {
        "rmsnorm": False,
        "add_bias_linear": True,
        "apply_residual_connection_post_layernorm": True,
        "post_layer_norm": False,
    }
    for key, bad in unsupported.items():
        if config.get(key, not bad) == bad:
            raise MentalEdgeError(f"the ChatGLM layout with {key}={bad} cannot be checked (GlmForCausalLM has none)")
    heads = int(config["num_attention_heads"])
    kv = int(config["multi_query_group_num"]) if config.get("multi_query_attention") else heads
    return GlmConfig(
        vocab_size=int(config["padded_vocab_size"]),
        hidden_size=int(config["hidden_size"]),
        intermediate_size=int(config["ffn_hidden_size"]),
        num_hidden_layers=int(config["num_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=int(config.get("kv_channels") or int(config["hidden_size"]) // heads),
        max_position_embeddings=int(config.get("seq_length", 8192)),
        rms_norm_eps=float(config["layernorm_epsilon"]),
        attention_bias=bool(config.get("add_qkv_bias", True)),
        tie_word_embeddings=False,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0 * float(config.get("rope_ratio", 1.0)),
            "partial_rotary_factor": 0.5,
        },
        pad_token_id=config.get("pad_token_id"),
        eos_token_id=config.get("eos_token_id"),
    )


def glm_from_remote(folder: Path, config: dict, dtype):
    """GlmForCausalLM holding the weights of a ChatGLMModel folder, renamed (and q/k/v split) in memory."""
    from transformers import GlmForCausalLM

    cfg = glm_config(config)
    model = GlmForCausalLM(cfg)
    state = native_names(_read_weights(folder), cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise MentalEdgeError(
            f"{folder}: the ChatGLM weights do not map onto GlmForCausalLM "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    return model.to(dtype)


def native_names(remote: dict, cfg) -> dict:
    """THUDM's names to transformers' (the inverse of tests/glm_tiny.to_remote)."""
    head_dim = cfg.head_dim
    q_rows, kv_rows = cfg.num_attention_heads * head_dim, cfg.num_key_value_heads * head_dim
    top = {
        "transformer.embedding.word_embeddings.weight": "model.embed_tokens.weight",
        "transformer.encoder.final_layernorm.weight": "model.norm.weight",
        "transformer.output_layer.weight": "lm_head.weight",
    }
    layer = {
        "input_layernorm.weight": "input_layernorm.weight",
        "post_attention_layernorm.weight": "post_attention_layernorm.weight",
        "self_attention.dense.weight": "self_attn.o_proj.weight",
        "mlp.dense_h_to_4h.weight": "mlp.gate_up_proj.weight",
        "mlp.dense_4h_to_h.weight": "mlp.down_proj.weight",
    }
    out = {}
    for name, tensor in remote.items():
        if name in top:
            out[top[name]] = tensor
        elif name.startswith("transformer.encoder.layers."):
            index, rest = name.removeprefix("transformer.encoder.layers.").split(".", 1)
            prefix = f"model.layers.{index}."
            if rest.startswith("self_attention.query_key_value."):
                kind = rest.rsplit(".", 1)[1]
                for part, piece in zip("qkv", tensor.split([q_rows, kv_rows, kv_rows])):
                    out[f"{prefix}self_attn.{part}_proj.{kind}"] = piece
            elif rest in layer:
                out[prefix + layer[rest]] = tensor
    return out


def _read_weights(folder: Path) -> dict:
    """Every tensor of the folder: safetensors, or `pytorch_model*.bin` with torch's weights-only loader (which
    refuses any pickled object that is not a tensor)."""
    torch = _torch()
    files = sorted(folder.glob("*.safetensors"))
    if files:
        from safetensors.torch import load_file

        return {k: v for f in files for k, v in load_file(f).items()}
    files = sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise MentalEdgeError(f"{folder}: no *.safetensors or pytorch_model*.bin weights")
    return {k: v for f in files for k, v in torch.load(f, map_location="cpu", weights_only=True).items()}


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def tokenize(folder: Path, text: str) -> list[int] | None:
    """The checkpoint's own tokens for plain text (no special tokens added), or None where its tokenizer is
    remote code (GLM-4's ranks file): the figures then show a vocabulary that does not match."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    tok_config = folder / "tokenizer_config.json"
    if tok_config.is_file() and "auto_map" in json.loads(tok_config.read_text(encoding="utf-8")):
        return None
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise MentalEdgeError(f"{folder}: its tokenizer could not be loaded ({_first_line(exc)})") from None
    return tok.encode(text, add_special_tokens=False)
