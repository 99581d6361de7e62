"""`mental-edge verify`: our conversions pass against their checkpoints (run by transformers), a deliberately
broken conversion fails naming the figure, `--against` reports how far a quantization moves a model, and bad
input is one line. Through the CLI, on IMHI rows.

Models: SmolLM2 rebuilt as a bf16 checkpoint (real weights), the tiny GLM-4 in both layouts and the tiny T5.
"""

import json
import re
import shutil
import sys

import pytest
from click.testing import CliRunner
from support import glm_tiny
from support.cli import one_error_line
from support.seq2seq_tiny import write_t5

import mental_edge
from mental_edge.cli import main

pytestmark = pytest.mark.slow  # real models and torch

ROWS = ["--rows", "1", "--tasks", "DR", "--tasks", "dreaddit", "--threads", "2"]


def verify(*args):
    result = CliRunner().invoke(main, ["verify", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    print("\n" + "\n".join(line for line in result.output.splitlines() if not line.startswith("  ")))  # with -s
    return result


def figures(output: str) -> dict:
    """The figures a verify run printed, as numbers."""
    top1 = re.search(r"top-1 agreement: (\d+)/(\d+)", output)
    labels = re.search(r"label agreement: (\d+)/(\d+)", output)
    return {
        "top1": int(top1[1]) / int(top1[2]),
        "positions": int(top1[2]),
        "kl": float(re.search(r"mean KL divergence \(reference \|\| model\): (\S+) nats", output)[1]),
        "top5": float(re.search(r"worst top-5 logit difference: (\S+)", output)[1]),
        "labels": (int(labels[1]), int(labels[2])),
        "label_prob": float(re.search(r"largest label probability difference: (\S+)", output)[1]),
    }


def convert(src, out, outtype="f16"):
    result = CliRunner().invoke(main, ["convert", str(src), "-o", str(out), "--outtype", outtype])
    assert result.exit_code == 0, result.output
    return out


# ---------------------------------------------------------------- SmolLM2 (LLaMA)


@pytest.fixture(scope="module")
def smol(smollm2_hf_checkpoint, tmp_path_factory):
    """f16 conversion of the rebuild, its Q8_0 and Q4_K_M, and an f16 written without the q/k permutation."""
    from mental_edge.convert.arch import llama

    root = tmp_path_factory.mktemp("verify-smol")
    files = {"f16": convert(smollm2_hf_checkpoint, root / "f16.gguf")}
    for quant in ("Q8_0", "Q4_K_M"):
        out = root / f"{quant}.gguf"
        result = CliRunner().invoke(main, ["quantize", str(files["f16"]), "-o", str(out), "--type", quant])
        assert result.exit_code == 0, result.output
        files[quant] = out
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(llama, "permute", lambda w, n_head: w)
        files["unpermuted"] = convert(smollm2_hf_checkpoint, root / "unpermuted.gguf")
    return files


def test_our_conversion_passes_against_the_checkpoint(smol, smollm2_hf_checkpoint, imhi_dir):
    result = verify(smol["f16"], "--reference", smollm2_hf_checkpoint, "--data", imhi_dir, *ROWS)
    assert result.exit_code == 0, result.output
    got = figures(result.output)
    assert got["positions"] > 200 and got["top1"] >= 0.98 and got["top5"] < 0.25
    assert got["labels"] == (2, 2) and got["label_prob"] < 0.05
    assert "verdict: PASS (thresholds: top-1 >= 98%" in result.output


def test_a_conversion_without_the_qk_permutation_fails_naming_the_figures(smol, smollm2_hf_checkpoint, imhi_dir):
    result = verify(smol["unpermuted"], "--reference", smollm2_hf_checkpoint, "--data", imhi_dir, *ROWS)
    assert result.exit_code == 1, result.output
    verdict = result.output.strip().splitlines()[-1]
    assert verdict.startswith("verdict: FAIL: top-1 agreement"), verdict
    assert "worst top-5 logit difference" in verdict
    assert figures(result.output)["top1"] < 0.9


def test_against_q8_0_is_closer_to_f16_than_q4_k_m(smol, imhi_dir):
    got = {}
    for quant in ("Q8_0", "Q4_K_M"):
        result = verify(smol[quant], "--against", smol["f16"], "--data", imhi_dir, *ROWS)
        assert "verdict: " in result.output, result.output
        got[quant] = figures(result.output)
        print(f"\n{quant} against f16: {got[quant]}")
    assert 0 < got["Q8_0"]["kl"] < got["Q4_K_M"]["kl"]
    assert got["Q8_0"]["top1"] > got["Q4_K_M"]["top1"]
    assert got["Q8_0"]["top5"] < got["Q4_K_M"]["top5"]
    same = verify(smol["f16"], "--against", smol["f16"], "--data", imhi_dir, *ROWS)
    assert figures(same.output)["kl"] == 0 and figures(same.output)["top5"] == 0  # a file against itself


def test_verify_runs_out_of_the_box_on_the_imhi_rows_shipped_with_the_package(smol):
    """No --data: an air-gapped user has no copy of the test set; the package's sample (four rows a task) serves,
    through the CLI and the Python API alike."""
    result = verify(smol["Q8_0"], "--against", smol["f16"], "--rows", "1", "--tasks", "DR,dreaddit")
    assert result.exit_code in (0, 1) and "verdict: " in result.output, result.output
    cli = figures(result.output)
    assert cli["positions"] > 100 and cli["labels"][1] == 2  # one shipped row of each task
    report = mental_edge.verify(smol["Q8_0"], against=smol["f16"], rows=1, tasks=["DR", "dreaddit"])
    assert report.passed == (result.exit_code == 0) and report.figures.positions == cli["positions"]
    assert (report.figures.labels_same, report.figures.labels) == cli["labels"]


# ---------------------------------------------------------------- bad input, one line each


def test_reference_of_another_architecture_is_one_line(smol, glm, imhi_dir):
    line = one_error_line(
        verify(smol["f16"], "--reference", glm["native"], "--data", imhi_dir, *ROWS), besides_indented=True
    )
    assert "is a chatglm model; the model file is llama" in line


def test_reference_of_another_vocabulary_is_one_line(smol, smollm2_hf_checkpoint, imhi_dir, tmp_path):
    other = tmp_path / "other-vocab"
    shutil.copytree(smollm2_hf_checkpoint, other)
    tok = json.loads((other / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = vocab["Ġthe"], vocab["Ġand"]  # two ids swapped: same size, another vocabulary
    vocab["Ġthe"], vocab["Ġand"] = b, a
    (other / "tokenizer.json").write_text(json.dumps(tok))
    line = one_error_line(verify(smol["f16"], "--reference", other, "--data", imhi_dir, *ROWS), besides_indented=True)
    assert "has another vocabulary: it tokenizes the first query differently" in line


def test_a_file_that_is_not_a_conversion_of_the_reference_is_one_line(smol, smollm2_hf_checkpoint, imhi_dir, tmp_path):
    other = tmp_path / "fewer-layers"
    shutil.copytree(smollm2_hf_checkpoint, other)
    config = json.loads((other / "config.json").read_text())
    config["num_hidden_layers"] -= 1
    (other / "config.json").write_text(json.dumps(config))
    line = one_error_line(verify(smol["f16"], "--reference", other, "--data", imhi_dir, *ROWS), besides_indented=True)
    assert "the model file is not a conversion of" in line and "layers 30 in the file, 29" in line


def test_an_uncheckable_layout_and_a_missing_extra_are_one_line(smol, smollm2_hf_checkpoint, imhi_dir, tmp_path):
    odd = tmp_path / "gpt2"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    line = one_error_line(verify(smol["f16"], "--reference", odd, "--data", imhi_dir, *ROWS), besides_indented=True)
    assert "the layout GPT2LMHeadModel cannot be checked" in line
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "torch", None)  # import torch now fails, as without the extra
        line = one_error_line(
            verify(smol["f16"], "--reference", smollm2_hf_checkpoint, "--data", imhi_dir, *ROWS), besides_indented=True
        )
    assert "pip install 'mental-edge[verify]'" in line
    line = one_error_line(verify(smol["f16"], "--data", imhi_dir), besides_indented=True)
    assert "--reference CHECKPOINT_DIR or --against OTHER_MODEL" in line


# ---------------------------------------------------------------- GLM-4, both layouts


@pytest.fixture(scope="module")
def glm(imhi_dir, tmp_path_factory):
    """The tiny GLM-4 in both layouts, their conversions, and one converted with a wrong rms epsilon."""
    from test_glm import imhi_texts

    ranks, merges = glm_tiny.train_ranks(imhi_texts(imhi_dir, per_task=30) + list(glm_tiny.CHINESE_TEXTS), 500)
    config = glm_tiny.glm_config(ranks)
    sd = glm_tiny.native_state_dict(config)
    root = tmp_path_factory.mktemp("verify-glm")
    out = {
        "native": glm_tiny.write_native(root / "native", sd, config, ranks, merges),
        "remote": glm_tiny.write_remote(root / "remote", sd, config, ranks),
    }
    wrong = shutil.copytree(out["remote"], root / "wrong-eps")
    cfg = json.loads((wrong / "config.json").read_text())
    cfg["layernorm_epsilon"] = 1e-5
    (wrong / "config.json").write_text(json.dumps(cfg))
    for name in ("native", "remote", "wrong-eps"):
        out[f"{name}.gguf"] = convert(root / name, root / f"{name}.gguf", outtype="f32")
    return out


@pytest.mark.parametrize("layout", ["native", "remote"])
def test_glm_conversions_pass_in_both_layouts(glm, layout, imhi_dir):
    result = verify(glm[f"{layout}.gguf"], "--reference", glm[layout], "--data", imhi_dir, *ROWS)
    assert result.exit_code == 0, result.output
    assert figures(result.output)["top5"] < 0.05
    assert not (glm["remote"] / glm_tiny.MARKER).exists()  # no checkpoint code ran


def test_glm_file_of_other_weights_is_said_to_be_no_conversion_of_the_reference(glm, imhi_dir, tmp_path):
    """Same layout, shapes and vocabulary, other weights (another seed)."""
    from safetensors.torch import save_file
    from transformers import GlmConfig

    other = shutil.copytree(glm["native"], tmp_path / "other")
    sd = glm_tiny.native_state_dict(GlmConfig.from_pretrained(other), seed=7)
    save_file({k: v.contiguous() for k, v in sd.items()}, other / "model.safetensors")
    result = verify(glm["native.gguf"], "--reference", other, "--data", imhi_dir, *ROWS)
    assert result.exit_code == 1, result.output
    assert "does not behave as a conversion of this reference" in result.output.splitlines()[-1]


def test_glm_with_a_wrong_rms_epsilon_fails(glm, imhi_dir):
    result = verify(glm["wrong-eps.gguf"], "--reference", glm["remote"], "--data", imhi_dir, *ROWS)
    assert result.exit_code == 1, result.output
    assert "verdict: FAIL:" in result.output and "worst top-5 logit difference" in result.output.splitlines()[-1]


# ---------------------------------------------------------------- T5


@pytest.fixture(scope="module")
def t5(imhi_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("verify-t5")
    ckpt = write_t5(root / "t5", imhi_dir)
    wrong = shutil.copytree(ckpt, root / "wrong-eps")
    cfg = json.loads((wrong / "config.json").read_text())
    cfg["layer_norm_epsilon"] = 0.5
    (wrong / "config.json").write_text(json.dumps(cfg))
    return {
        "ckpt": ckpt,
        "gguf": convert(ckpt, root / "t5.gguf", outtype="f32"),
        "wrong": convert(wrong, root / "wrong.gguf", outtype="f32"),
    }


def test_t5_conversion_passes_and_a_wrong_epsilon_fails(t5, imhi_dir):
    result = verify(t5["gguf"], "--reference", t5["ckpt"], "--data", imhi_dir, *ROWS)
    assert result.exit_code == 0, result.output
    assert figures(result.output)["top5"] < 0.05
    result = verify(t5["wrong"], "--reference", t5["ckpt"], "--data", imhi_dir, *ROWS)
    assert result.exit_code == 1, result.output
    assert "verdict: FAIL:" in result.output


# ---------------------------------------------------------------- pull --verify


def test_pull_verify_keeps_the_verdict_in_the_store_and_models_shows_it(
    smollm2_hf_checkpoint, imhi_dir, monkeypatch, tmp_path
):
    """Against the hub stand-in: a tiny LLaMA checkpoint downloaded, converted to f16, quantized to Q8_0; the f16
    checked against the checkpoint and the Q8_0 against the f16 before either is removed."""
    from support.hub_standin import FakeRepo, HubStandIn
    from test_pull import go_online, tiny_llama_files

    from mental_edge import store

    repo = FakeRepo(tiny_llama_files(smollm2_hf_checkpoint))
    with HubStandIn({"someone/tiny-llama": repo}) as server:
        go_online(monkeypatch, server.url)
        result = CliRunner().invoke(
            main, ["pull", "someone/tiny-llama", "--quant", "Q8_0", "--verify", str(imhi_dir / "test_instruction")]
        )
    assert result.exit_code == 0, result.output
    entry = store.find_model("tiny-llama")
    check = entry.verification
    assert check["reference"]["kind"] == "reference" and check["quantization"]["kind"] == "against"
    assert check["reference"]["verified"] is True, check  # our f16 conversion of the checkpoint
    assert check["verified"] == (check["reference"]["verified"] and check["quantization"]["verified"])
    n = int(check["label_agreement"].split("/")[1])
    assert n > 0 and check["label_agreement"] == check["quantization"]["label_agreement"]
    assert list(store.downloads_dir().iterdir()) == []  # the checkpoint is removed afterwards
    assert sorted(p.name for p in store.models_dir().iterdir()) == ["tiny-llama-q8_0.gguf"]  # and the f16 file
    listing = CliRunner().invoke(main, ["models"]).output.splitlines()
    assert listing[0].split()[-1] == "VERIFIED"
    shown = ["yes" if check["verified"] else "NO", check["label_agreement"]]
    assert listing[1].split()[-2:] == shown
    out = tmp_path / "out.jsonl"  # and the records of an analysis with it carry the verdict in their run
    args = ["analyze", "-m", "tiny-llama", "--task", "DR", "--no-explain", "-o", str(out), "I cannot sleep."]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text().splitlines()[0])["run"]["verified"] == " ".join(shown)


def test_verify_loads_torch_only_when_it_checks_against_a_checkpoint():
    """The CLI, verify and the runtime import no torch or transformers; verify_reference imports them lazily."""
    import subprocess

    code = (
        "import sys, mental_edge.cli, mental_edge.verification, mental_edge.verification.reference;"
        "import mental_edge.store.pull;"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- BART (CTranslate2)


def test_bart_conversion_passes_and_a_wrong_embedding_scale_fails(imhi_dir, tmp_path):
    from support.seq2seq_tiny import write_bart

    ckpt = write_bart(tmp_path / "bart", imhi_dir)
    wrong = shutil.copytree(ckpt, tmp_path / "wrong-scale")
    cfg = json.loads((wrong / "config.json").read_text())
    cfg["scale_embedding"] = True  # embeddings times sqrt(d_model) = 8
    (wrong / "config.json").write_text(json.dumps(cfg))
    ours, broken = convert(ckpt, tmp_path / "ct2", "f32"), convert(wrong, tmp_path / "ct2-wrong", "f32")
    result = verify(ours, "--reference", ckpt, "--data", imhi_dir, *ROWS)
    assert result.exit_code == 0, result.output
    assert figures(result.output)["top5"] < 0.05
    result = verify(broken, "--reference", ckpt, "--data", imhi_dir, *ROWS)
    assert result.exit_code == 1, result.output
    assert "verdict: FAIL:" in result.output
