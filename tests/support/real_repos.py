"""The six known models' hub repos as their public file lists show them (../shared/design/field-notes.md,
"What the real repos hold"), rebuilt with tiny weights for the stand-in hub (tests only).

Each builder returns {file name: bytes} holding exactly the repo's file names. Where the notes could not see a
file list (klyang/MentaLLaMA-chat-7B itself) or a file (MentalGLM's tokenizer.model), the choice is said.
Python files and training_args.bin are traps: executing or unpickling them leaves a marker file.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import torch

MARKER = "checkpoint-code-ran.marker"
CODE_TRAP = (
    f"import pathlib\npathlib.Path(__file__).with_name({MARKER!r}).write_text('ran')\n"
    "raise RuntimeError('checkpoint code was executed')\n"
)
REPO_FILES = {".gitattributes": b"*.bin filter=lfs diff=lfs merge=lfs -text\n", "README.md": b"# model card\n"}


class _TrainingArgs:
    """What a Trainer pickles into training_args.bin: an object whose unpickling runs code (here a marker)."""

    def __reduce__(self):
        return (exec, (f"open({MARKER!r}, 'w').write('unpickled')",))


def training_args_bin() -> bytes:
    buffer = io.BytesIO()
    pickle.dump(_TrainingArgs(), buffer)
    return buffer.getvalue()


def _read(folder: Path, *names: str) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names}


def _torch_bin(sd: dict[str, torch.Tensor]) -> bytes:
    """A state dict saved as torch.save writes pytorch_model.bin (tied tensors keep sharing their storage)."""
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    return buffer.getvalue()


def _bin_shards(sd: dict[str, torch.Tensor], n: int) -> dict[str, bytes]:
    """`pytorch_model-0000k-of-0000n.bin` shards and their index, as transformers 4.3x wrote them."""
    names = list(sd)
    files, weight_map = {}, {}
    for k in range(1, n + 1):
        shard = f"pytorch_model-{k:05d}-of-{n:05d}.bin"
        part = {name: sd[name] for name in names[k - 1 :: n]}
        files[shard] = _torch_bin(part)
        weight_map.update(dict.fromkeys(part, shard))
    files["pytorch_model.bin.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    return files


def mentallama(folder: Path, tokenizer: Path, eps: float, shards: int) -> dict[str, bytes]:
    """klyang/MentaLLaMA-chat-7B/-13B: float32 .bin shards + index, LLaMA-2's tokenizer.model; rms_norm_eps as
    each config says (1e-6 in the 7B, 1e-5 in the 13B). The 7B's own file list was not seen: that of the -hf
    repo (the same files) is used."""
    from support.llama2_tiny import config, state_dict

    cfg = config(eps=eps)
    files = _bin_shards(state_dict(cfg), shards)
    files["config.json"] = json.dumps({**cfg, "transformers_version": "4.32.0"}).encode()
    files["generation_config.json"] = json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}).encode()
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    files["special_tokens_map.json"] = json.dumps(specials).encode()
    files.update(_read(tokenizer, "tokenizer.model", "tokenizer_config.json"))
    return {**REPO_FILES, **files}


BART_SPECIALS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "cls_token": "<s>",
    "mask_token": "<mask>",
}


def _float32_state_dict(model) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in model.state_dict().items()}


def mentalbart(folder: Path) -> dict[str, bytes]:
    """Tianlin668/MentalBART: one float32 pytorch_model.bin beside training_args.bin and trainer_state.json;
    tokenizer.json and merges.txt (no vocab.json)."""
    from transformers import BartForConditionalGeneration

    model = BartForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    names = ("config.json", "generation_config.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")
    files = _read(folder, *names)
    files["special_tokens_map.json"] = json.dumps(BART_SPECIALS).encode()
    files["pytorch_model.bin"] = _torch_bin(_float32_state_dict(model))
    files["trainer_state.json"] = json.dumps({"epoch": 3.0, "global_step": 1200, "log_history": []}).encode()
    files["training_args.bin"] = training_args_bin()
    return {**REPO_FILES, **files}


def bart_large_cnn(folder: Path) -> dict[str, bytes]:
    """facebook/bart-large-cnn (BARTScore's base): model.safetensors and pytorch_model.bin side by side with the
    TensorFlow, Flax and Rust weights, vocab.json + merges.txt + tokenizer.json."""
    names = ("config.json", "generation_config.json", "merges.txt", "vocab.json", "tokenizer.json",
             "model.safetensors")  # fmt: skip
    files = _read(folder, *names)
    files["pytorch_model.bin"] = b"never fetched: safetensors win"
    for name in ("tf_model.h5", "flax_model.msgpack", "rust_model.ot"):
        files[name] = b"weights of another framework"
    return {**REPO_FILES, **files}


def mentalt5(folder: Path) -> dict[str, bytes]:
    """Tianlin668/MentalT5: one float32 pytorch_model.bin (t5-large's layout) with spiece.model; no
    tokenizer.json."""
    from transformers import T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    files = _read(folder, "config.json", "generation_config.json", "spiece.model", "tokenizer_config.json")
    extra = [f"<extra_id_{n}>" for n in range(100)]
    specials = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "additional_special_tokens": extra}
    files["special_tokens_map.json"] = json.dumps(specials).encode()
    files["pytorch_model.bin"] = _torch_bin(_float32_state_dict(model))
    return {**REPO_FILES, **files}


def _safetensors_shards(path: Path, n: int) -> dict[str, bytes]:
    from safetensors.torch import load_file, save

    sd = load_file(path)
    names = sorted(sd)
    files, weight_map = {}, {}
    for k in range(1, n + 1):
        shard = f"model-{k:05d}-of-{n:05d}.safetensors"
        part = {name: sd[name].contiguous() for name in names[k - 1 :: n]}
        files[shard] = save(part, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    total = sum(t.numel() * t.element_size() for t in sd.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    files["model.safetensors.index.json"] = json.dumps(index).encode()
    return files


def mentalglm(remote: Path, chat: bool) -> dict[str, bytes]:
    """zwzzz/MentalGLM(-chat): GLM-4's remote-code layout in 10 safetensors shards + index, beside
    configuration_chatglm.py and added_tokens.json; -chat also tokenization_chatglm.py with the ranks file.
    Whether the base repo ships tokenizer.model was not seen: here it does not (so it needs --tokenizer-from)."""
    config = json.loads((remote / "config.json").read_text())
    tok_config = json.loads((remote / "tokenizer_config.json").read_text())
    specials = {entry["content"]: int(i) for i, entry in tok_config["added_tokens_decoder"].items()}
    files = _safetensors_shards(remote / "model.safetensors", 10)
    files["config.json"] = json.dumps(config).encode()
    files["generation_config.json"] = json.dumps({"eos_token_id": config["eos_token_id"], "do_sample": False}).encode()
    files["added_tokens.json"] = json.dumps(specials).encode()
    files["configuration_chatglm.py"] = CODE_TRAP.encode()
    if chat:
        files["tokenization_chatglm.py"] = CODE_TRAP.encode()
        files.update(_read(remote, "tokenizer.model", "tokenizer_config.json"))
    return {**REPO_FILES, **files}
