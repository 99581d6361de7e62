"""Hugging Face checkpoint -> GGUF, without torch: read lazily, write streaming, quantize through llama.cpp.

`convert_checkpoint` is the one entry point; `quantize` (in .quantize) re-quantizes an existing GGUF.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import gguf

from . import outtypes
from .arch import ARCHITECTURES, architecture_for
from .checkpoint import Checkpoint
from .errors import ConversionError
from .gguf_out import Progress, temp_path, write_gguf

__all__ = ["ARCHITECTURES", "Checkpoint", "ConversionError", "convert_checkpoint", "source_url"]

SOURCE_REVISION_KEY = "general.source.revision"  # not a gguf standard key: the hub revision converted


def source_url(source: str) -> str:
    """A hub repo id becomes its huggingface.co address; a URL or path is kept as given."""
    if "://" in source or source.startswith(("/", ".")) or source.count("/") != 1:
        return source
    return f"https://huggingface.co/{source}"


def convert_checkpoint(
    src_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    outtype: str | None = "f16",
    quant: str | None = None,
    source: str | None = None,
    revision: str | None = None,
    progress: Progress | None = None,
    on_quantized: Callable | None = None,
    tokenizer_from: str | os.PathLike | None = None,
    say: Callable[[str], None] | None = None,
    state_dict: str | os.PathLike | None = None,
) -> Path:
    """Convert the checkpoint in `src_dir` to the GGUF file `out_path` and return its path.

    `outtype` is f32, f16, bf16 or q8_0. With `quant` (a llama.cpp file type such as Q4_K_M) the
    checkpoint is first written as `outtype` to a temporary file, quantized, and the temporary removed.
    `source` (hub repo id or URL) and `revision` are recorded in the file's metadata. `on_quantized` receives
    the quantization's `QuantizeResult` (which tensors fell back to another type). `tokenizer_from` is a folder
    whose tokenizer files are used instead of the checkpoint's (a fine-tune shipped without its base model's);
    `say` receives one line for each change made to fit the tokenizer to the weights (tokens dropped or padded).
    A BART checkpoint becomes a CTranslate2 model folder instead (outtype int8, f16 or f32; int8 when None), its
    weights replaced by those of the torch state-dict file `state_dict` where one is given (BART only).
    """
    from .bart_ct2 import convert_bart, is_bart_folder

    if is_bart_folder(src_dir):
        if quant is not None:
            raise ConversionError("BART becomes a CTranslate2 folder: choose its weights with outtype, not quant")
        options = dict(
            source=source, revision=revision, progress=progress, tokenizer_from=tokenizer_from, state_dict=state_dict
        )
        return convert_bart(src_dir, out_path, outtype, **options)
    if state_dict is not None:
        raise ConversionError("a state dict applied on top of the checkpoint is for BART (a BARTScore scorer) only")
    outtype = outtypes.check_outtype(outtype or "f16")
    out = Path(out_path)
    if quant is not None:
        from .quantize import file_type_for

        file_type_for(quant)  # an unknown type fails before the long conversion
    ckpt = Checkpoint.open(src_dir)
    arch = architecture_for(ckpt.config)
    tensors = arch.plan(ckpt, outtype)  # checks every shape before anything is written
    from .vocab import load_vocab

    vocab = load_vocab(ckpt.folder, tokenizer_from)
    for note in vocab.notes:
        (say or (lambda _line: None))(note)
    name = (source.rstrip("/").rsplit("/", 1)[-1] if source else None) or ckpt.folder.resolve().name

    def add_metadata(writer: gguf.GGUFWriter) -> None:
        writer.add_name(name)
        writer.add_file_type(outtypes.file_type(outtype))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if source:
            writer.add_source_url(source_url(source))
        if revision:
            writer.add_string(SOURCE_REVISION_KEY, revision)
        arch.add_metadata(writer, ckpt.config)
        vocab.write(writer)

    if quant is None:
        return write_gguf(out, arch.GGUF_ARCH, add_metadata, tensors, progress)
    from .quantize import quantize

    intermediate = temp_path(out, suffix=f".{outtype}.gguf")
    try:
        write_gguf(intermediate, arch.GGUF_ARCH, add_metadata, tensors, progress)
        result = quantize(intermediate, out, quant, progress=progress)
        if on_quantized is not None:
            on_quantized(result)
        return result.path
    finally:
        intermediate.unlink(missing_ok=True)
