"""seedark's own weights format, and weights that must be refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from seedark.errors import WeightsError
from seedark.models.network import NetworkSpec
from seedark.models.weights import load_weights, random_weights, save_safetensors

FIXTURE = Path(__file__).parent / "data" / "tf_sony_w4"


def test_tf_checkpoint_converts_to_identical_safetensors(tmp_path: Path) -> None:
    tf = load_weights(FIXTURE)
    dest = save_safetensors(tf, tmp_path / "sony-w4.safetensors", {"note": "test"})
    back = load_weights(dest)
    assert back.kind == "safetensors"
    assert back.spec == tf.spec == NetworkSpec(in_channels=4, width=4, block=2)
    assert back.metadata["note"] == "test" and back.metadata["packing"] == "bayer"
    assert set(back.state) == set(tf.state)
    for key, value in tf.state.items():
        assert torch.equal(back.state[key], value), key
    x = torch.rand(1, 4, 13, 11)
    with torch.no_grad():
        assert torch.equal(tf.build()(x), back.build()(x))


def test_width_and_variant_are_inferred(tmp_path: Path) -> None:
    spec = NetworkSpec(in_channels=9, width=8, block=3)
    path = save_safetensors(random_weights(spec), tmp_path / "fuji.safetensors")
    assert load_weights(path).spec == spec


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    state = dict(random_weights(NetworkSpec(width=4)).state)
    state["g_conv5_2.weight"] = torch.zeros(64, 64, 1, 1)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsError, match=r"don't fit.*g_conv5_2.weight has shape \(64, 64, 1, 1\)"):
        load_weights(tmp_path / "bad.safetensors")
    del state["g_conv5_2.weight"]
    save_file(state, str(tmp_path / "missing.safetensors"))
    with pytest.raises(WeightsError, match=r"missing g_conv5_2\.weight"):
        load_weights(tmp_path / "missing.safetensors")


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    state = dict(random_weights(NetworkSpec(width=4)).state)
    state["g_conv3_1.bias"] = torch.full_like(state["g_conv3_1.bias"], float("nan"))
    save_file(state, str(tmp_path / "nan.safetensors"))
    with pytest.raises(WeightsError, match="NaN"):
        load_weights(tmp_path / "nan.safetensors")


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(Path("/tmp/seedark-unpickled-marker")),))


def test_pickles_are_never_loaded(tmp_path: Path) -> None:
    marker = Path("/tmp/seedark-unpickled-marker")
    marker.unlink(missing_ok=True)
    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps({"state": _Boom()}))
    with pytest.raises(WeightsError, match="not a TensorFlow checkpoint or safetensors"):
        load_weights(evil)
    assert not marker.exists()


def test_missing_weights_path(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no such file"):
        load_weights(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="no TensorFlow checkpoint"):
        load_weights(empty)


def test_random_weights_are_seeded() -> None:
    a = random_weights(NetworkSpec(width=4), seed=3).state
    b = random_weights(NetworkSpec(width=4), seed=3).state
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
