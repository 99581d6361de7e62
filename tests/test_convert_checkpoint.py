"""Reading checkpoints: safetensors and torch .bin give the same tensors, and a .bin never runs code."""

import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from mental_edge.convert import ConversionError
from mental_edge.convert.arch import llama
from mental_edge.convert.checkpoint import Checkpoint
from support.convert_tiny import state_dict, write_bin, write_safetensors

pytestmark = pytest.mark.slow  # torch: not in the fast tier


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_sharded_bin_and_safetensors_twin_give_the_same_tensors(tmp_path, dtype):
    sd = state_dict(dtype)
    st = Checkpoint.open(write_safetensors(tmp_path / "st", sd, shards=2))
    pt = Checkpoint.open(write_bin(tmp_path / "pt", sd, shards=3))
    assert sorted(st.names()) == sorted(pt.names()) == sorted(sd)
    for name, tensor in sd.items():
        a, b = st.get(name).load(), pt.get(name).load()
        assert a.dtype == b.dtype == (np.float16 if dtype == torch.float16 else np.float32)
        np.testing.assert_array_equal(a, _as_numpy(tensor))  # torch's own values, independently
        np.testing.assert_array_equal(b, _as_numpy(tensor))
    # and the converted output tensors are byte for byte the same
    for x, y in zip(llama.plan(st, "f16"), llama.plan(pt, "f16")):
        assert (x.name, x.shape, x.qtype) == (y.name, y.shape, y.qtype)
        assert x.produce().tobytes() == y.produce().tobytes()


def test_bin_views_with_offsets_and_strides_are_rebuilt(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    views = {"slice": base[2:5], "transposed": base.t(), "column": base[:, 3], "whole": base}
    torch.save(views, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text("{}")
    ckpt = Checkpoint.open(tmp_path)
    for name, view in views.items():
        np.testing.assert_array_equal(ckpt.get(name).load(), view.numpy())


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _torch_like_zip(path, payload: bytes):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/byteorder", "little")


@pytest.mark.parametrize("func, expected", [(os.system, "system"), (eval, ".eval"), (io.open, "open")])
def test_a_pickle_asking_for_another_global_is_refused_and_nothing_runs(tmp_path, func, expected):
    marker = tmp_path / "pwned"
    arg = f"open({str(marker)!r}, 'w')" if func is eval else (f"touch {marker}" if func is os.system else str(marker))
    # a valid-looking tensor dictionary with the payload hidden among its values
    payload = pickle.dumps({"model.norm.weight": _Evil(func, arg)}, protocol=2)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    _torch_like_zip(folder / "pytorch_model.bin", payload)
    with pytest.raises(ConversionError) as err:
        Checkpoint.open(folder)
    msg = str(err.value)
    assert "pytorch_model.bin" in msg and expected in msg and "\n" not in msg
    assert not marker.exists()


def test_a_real_torch_save_of_a_non_tensor_object_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    torch.save(
        {"w": torch.zeros(2), "opt": torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)},
        tmp_path / "pytorch_model.bin",
    )
    with pytest.raises(ConversionError, match=r"pytorch_model\.bin: refused .*torch\.optim"):
        Checkpoint.open(tmp_path)
