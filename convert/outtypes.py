"""The output types of a conversion (f32, f16, bf16, q8_0): which GGML type each tensor gets, and its bytes."""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, LlamaFileType
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize

from .errors import ConversionError

# outtype name -> (GGML type of 2-D weights, general.file_type)
OUTTYPES = {
    "f32": (T.F32, LlamaFileType.ALL_F32),
    "f16": (T.F16, LlamaFileType.MOSTLY_F16),
    "bf16": (T.BF16, LlamaFileType.MOSTLY_BF16),
    "q8_0": (T.Q8_0, LlamaFileType.MOSTLY_Q8_0),
}


def check_outtype(outtype: str) -> str:
    key = outtype.lower()
    if key not in OUTTYPES:
        raise ConversionError(f"unknown output type {outtype!r}: choose one of {', '.join(OUTTYPES)}")
    return key


def file_type(outtype: str) -> LlamaFileType:
    return OUTTYPES[check_outtype(outtype)][1]


def tensor_type(shape: tuple[int, ...], outtype: str, keep_f32: bool = False) -> T:
    """1-D tensors (norms, biases) and those an architecture keeps exact stay F32, as llama.cpp expects.

    Block types need rows that are whole blocks; a tensor whose rows are not falls back to F16.
    """
    if keep_f32 or len(shape) <= 1:
        return T.F32
    qtype = OUTTYPES[check_outtype(outtype)][0]
    block = GGML_QUANT_SIZES[qtype][0]
    return qtype if shape[-1] % block == 0 else T.F16


def nbytes(shape: tuple[int, ...], qtype: T) -> int:
    block, type_size = GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape, dtype=np.int64)) // block * type_size


def encode(array: np.ndarray, qtype: T) -> np.ndarray:
    """The bytes llama.cpp reads for `array` stored as `qtype` (float32/float16 arrays, or uint8 blocks)."""
    if qtype == T.F32:
        return np.ascontiguousarray(array, dtype=np.float32)
    if qtype == T.F16:
        return np.ascontiguousarray(array, dtype=np.float16)
    return quantize(np.ascontiguousarray(array, dtype=np.float32), qtype)
