"""`mental-edge doctor` on this CPU-only llama.cpp build."""

import json

import llama_cpp
from click.testing import CliRunner
from support.gguf_tiny import write_tiny_gguf

from mental_edge import store
from mental_edge.cli import main
from mental_edge.doctor import backends
from mental_edge.engine import load_engine


def test_doctor_reports_a_cpu_build_with_no_gpu_layers(isolated_home):
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert llama_cpp.llama_print_system_info().decode().split("|")[0].strip() in out  # llama.cpp's own report
    assert "GPU offload:          no" in out
    assert "default --gpu-layers: 0" in out
    assert str(isolated_home) in out and "0 model(s)" in out


def test_doctor_json_counts_the_store_and_names_optional_engines(isolated_home, tmp_path):
    model = write_tiny_gguf(tmp_path / "tiny.gguf")
    store.import_model(model, name="tiny")
    report = json.loads(CliRunner().invoke(main, ["doctor", "--json"]).output)
    assert report["store"] == {"location": str(isolated_home), "models": 1, "size_bytes": model.stat().st_size}
    assert report["llama_cpp"]["gpu_offload"] is False and report["llama_cpp"]["default_gpu_layers"] == 0
    assert report["llama_cpp"]["backends"] == ["CPU"]
    import ctranslate2

    assert report["optional"]["ctranslate2"] == ctranslate2.__version__
    assert set(report["optional"]) == {"ctranslate2", "ray", "fastapi", "uvicorn"}


def test_backend_names_are_read_from_system_info():
    cuda = "CUDA : ARCHS = 890 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | CPU : SSE3 = 1 | AVX = 1 | "
    assert backends(cuda) == ["CUDA", "CPU"]
    assert backends("Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 | ARM_FMA = 1 |") == ["Metal", "CPU"]
    assert backends(llama_cpp.llama_print_system_info().decode()) == ["CPU"]


def test_a_model_on_this_build_offloads_nothing_by_default(smollm2_gguf):
    engine = load_engine(smollm2_gguf, n_ctx=256, threads=1)
    try:
        assert engine.settings["gpu_layers"] == 0
    finally:
        engine.close()
