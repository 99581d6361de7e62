"""Bad inputs give one line naming the file (library: ConversionError; CLI: `Error: ...`, exit 1), and an
interrupted conversion leaves neither the final file nor a temporary one."""

import json
import os

import pytest
import torch
from click.testing import CliRunner
from mental_edge.convert import ConversionError, convert_checkpoint
from support.convert_tiny import CONFIG, state_dict, write_bin, write_safetensors

from mental_edge.cli import main

pytestmark = pytest.mark.slow  # torch: not in the fast tier


def _cli_error(*args) -> str:
    result = CliRunner().invoke(main, list(map(str, args)))
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()  # progress lines may come first; the error is the last one
    assert lines[-1].startswith("Error: "), result.stderr
    assert not any(line.startswith(("Error", "Traceback")) for line in lines[:-1]), result.stderr
    return lines[-1]


def _truncate(path, keep_fraction=0.6):
    with open(path, "r+b") as fp:
        fp.truncate(int(path.stat().st_size * keep_fraction))


def _bad_config(**changes):
    return {**CONFIG, **changes}


def make_missing_config(tmp_path):
    folder = write_safetensors(tmp_path / "m", state_dict())
    (folder / "config.json").unlink()
    return folder, "config.json: missing"


def make_no_weights(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    return folder, "no weights found"


def make_truncated_safetensors_shard(tmp_path):
    folder = write_safetensors(tmp_path / "m", state_dict(), shards=2)
    _truncate(folder / "model-00002-of-00002.safetensors")
    return folder, "model-00002-of-00002.safetensors: truncated"


def make_truncated_bin_shard(tmp_path):
    folder = write_bin(tmp_path / "m", state_dict(), shards=2)
    _truncate(folder / "pytorch_model-00001-of-00002.bin")
    return folder, "pytorch_model-00001-of-00002.bin: unreadable or truncated"


def make_index_naming_a_missing_shard(tmp_path):
    folder = write_safetensors(tmp_path / "m", state_dict(), shards=2)
    (folder / "model-00001-of-00002.safetensors").unlink()
    return folder, "model.safetensors.index.json: lists the shard model-00001-of-00002.safetensors"


def make_shape_disagreeing_with_config(tmp_path):
    folder = write_safetensors(tmp_path / "m", state_dict(), config=_bad_config(intermediate_size=80))
    return (
        folder,
        "model.safetensors: tensor model.layers.0.mlp.down_proj.weight has shape [64, 96], "
        "config.json implies [64, 80]",
    )


def make_missing_tensor(tmp_path):
    sd = state_dict()
    del sd["model.layers.1.mlp.up_proj.weight"]
    return write_safetensors(tmp_path / "m", sd), "tensor model.layers.1.mlp.up_proj.weight is missing"


def make_unknown_architecture(tmp_path):
    folder = write_safetensors(tmp_path / "m", state_dict(), config=_bad_config(architectures=["GPTNeoXForCausalLM"]))
    return folder, "config.json: architecture GPTNeoXForCausalLM is not supported; supported: "


def make_missing_tokenizer(tmp_path):
    return write_safetensors(tmp_path / "m", state_dict()), "no tokenizer found"


def make_non_float_weights(tmp_path):
    sd = state_dict()
    sd["model.norm.weight"] = torch.ones(64, dtype=torch.int32)
    return write_safetensors(tmp_path / "m", sd), "tensor model.norm.weight has dtype I32"


CASES = [
    make_missing_config,
    make_no_weights,
    make_truncated_safetensors_shard,
    make_truncated_bin_shard,
    make_index_naming_a_missing_shard,
    make_shape_disagreeing_with_config,
    make_missing_tensor,
    make_unknown_architecture,
    make_missing_tokenizer,
    make_non_float_weights,
]


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__.removeprefix("make_"))
def test_bad_checkpoint_gives_one_line_naming_the_file(tmp_path, make):
    folder, expected = make(tmp_path)
    out = tmp_path / "out.gguf"
    with pytest.raises(ConversionError) as err:
        convert_checkpoint(folder, out)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert expected in _cli_error("convert", folder, "-o", out)
    assert sorted(os.listdir(tmp_path)) == ["m"]  # nothing written, not even a temporary file


def test_an_unknown_architecture_lists_every_supported_one(tmp_path):
    from mental_edge.convert import ARCHITECTURES

    folder, _ = make_unknown_architecture(tmp_path)
    line = _cli_error("convert", folder, "-o", tmp_path / "x.gguf")
    assert "LlamaForCausalLM" in line and all(name in line for name in ARCHITECTURES)


def test_unknown_types_are_refused_before_any_work(tmp_path):
    folder = write_safetensors(tmp_path / "m", state_dict())
    with pytest.raises(ConversionError, match="unknown output type 'q3'"):
        convert_checkpoint(folder, tmp_path / "x.gguf", outtype="q3")
    line = _cli_error("convert", folder, "-o", tmp_path / "x.gguf", "--quant", "Q9_Z")
    assert "unknown quantization type 'Q9_Z'" in line and "Q4_K_M" in line and "IQ4_XS" in line


def test_quantize_errors_are_one_line(tmp_path, smollm2_gguf):
    # llama.cpp refuses to requantize an already quantized file unless asked; its reason comes through
    line = _cli_error("quantize", smollm2_gguf, "-o", tmp_path / "q.gguf", "--type", "Q4_K_M")
    assert "SmolLM2-135M-Instruct.Q4_1.gguf: llama.cpp could not quantize it to Q4_K_M: requantizing" in line
    not_gguf = tmp_path / "not.gguf"
    not_gguf.write_bytes(b"GGUF but not really")
    assert "not.gguf: llama.cpp could not quantize it" in _cli_error(
        "quantize", not_gguf, "-o", tmp_path / "q.gguf", "--type", "Q8_0"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not.gguf"]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_conversion_leaves_no_file(tmp_path, smollm2_hf_checkpoint, stop):
    def progress(done, total, name):
        if done == 5:
            raise stop("stopped by the test")

    out = tmp_path / "model.gguf"
    with pytest.raises(stop):
        convert_checkpoint(smollm2_hf_checkpoint, out, progress=progress)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_conversion_with_quant_leaves_no_intermediate(tmp_path, smollm2_hf_checkpoint):
    def progress(done, total, name):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(smollm2_hf_checkpoint, tmp_path / "model.gguf", quant="Q8_0", progress=progress)
    assert list(tmp_path.iterdir()) == []


def test_a_source_that_is_neither_a_folder_nor_a_hub_id(tmp_path):
    assert "no such checkpoint folder" in _cli_error("convert", tmp_path / "nowhere", "-o", tmp_path / "x.gguf")
    (tmp_path / "file.bin").write_bytes(b"x")
    assert "file.bin: no such checkpoint folder" in _cli_error(
        "convert", tmp_path / "file.bin", "-o", tmp_path / "x.gguf"
    )


def test_a_hub_id_offline_gives_one_line(tmp_path):
    # HF_HUB_OFFLINE=1 is set for every test (conftest): the hub is never reached
    line = _cli_error("convert", "no-such-org/no-such-model", "-o", tmp_path / "x.gguf")
    assert "no-such-org/no-such-model" in line
    assert list(tmp_path.iterdir()) == []
