"""A tiny but real GGUF file written with gguf's own writer (tests only)."""

from pathlib import Path

import numpy as np
from gguf import GGUFWriter, LlamaFileType


def write_tiny_gguf(path: Path, file_type: LlamaFileType = LlamaFileType.MOSTLY_Q4_K_M, seed: int = 0) -> Path:
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_file_type(int(file_type))
    rng = np.random.default_rng(seed)
    writer.add_tensor("token_embd.weight", rng.standard_normal((16, 8)).astype(np.float32))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
