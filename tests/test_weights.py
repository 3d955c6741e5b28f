"""seedark's own weights format, and weights that must be refused."""

from __future__ import annotations

import json
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from helpers.peakmem import run_measuring
from helpers.tfwriter import entry_proto, sid_tf_tensors, write_checkpoint
from seedark.errors import WeightsError
from seedark.models.network import NetworkSpec
from seedark.models.tfcheckpoint import crc32c, mask_crc
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


# --------------------------------------------------------------------------- hostile files: header first

GIB = 1 << 30
SLOT_BYTES = 256 << 20


def craft_safetensors(path: Path, state: dict[str, torch.Tensor], extra: dict[str, object] | None = None) -> Path:
    """A safetensors file written by hand: ``state`` as F32, then ``extra`` header entries as given,
    their ``data_offsets`` counted from the end of the real data; the file is extended (sparse) to
    the end of the last one, so safetensors itself would accept it."""
    header: dict[str, object] = {}
    blob = bytearray()
    for name in sorted(state):
        raw = state[name].numpy().astype("<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(state[name].shape),
            "data_offsets": [len(blob), len(blob) + len(raw)],
        }
        blob += raw
    end = len(blob)
    for name, entry in (extra or {}).items():
        if isinstance(entry, dict) and "data_offsets" in entry:
            begin, stop = entry["data_offsets"]
            entry = {**entry, "data_offsets": [len(blob) + begin, len(blob) + stop]}
            end = max(end, len(blob) + stop)
        header[name] = entry
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + bytes(blob))
        f.truncate(8 + len(text) + end)
    return path


def small_state() -> dict[str, torch.Tensor]:
    return dict(random_weights(NetworkSpec(width=4), seed=2).state)


# One child process per file, so that its peak memory is its own, reset just before the load
# (helpers/peakmem.py).
MEASURE = r"""
import json, sys
from seedark.errors import WeightsError
from seedark.models.weights import load_weights
from helpers.peakmem import grown_since, reset_peak

base = reset_peak()
try:
    load_weights(sys.argv[1])
    reason = None
except WeightsError as exc:
    reason = str(exc)
print(json.dumps({"grown": grown_since(base), "error": reason}))
"""


def peak_while_loading(path: Path) -> dict[str, object]:
    return run_measuring(MEASURE, str(path), timeout=120)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_an_unused_2_gib_tensor_is_refused_from_the_header(tmp_path: Path) -> None:
    junk = {"dtype": "F32", "shape": [512, 1024, 1024], "data_offsets": [0, 2 * GIB]}
    path = craft_safetensors(tmp_path / "junk.safetensors", small_state(), {"junk": junk})
    assert path.stat().st_size > 2 * GIB and path.stat().st_blocks * 512 < 10 << 20  # sparse
    result = peak_while_loading(path)
    assert result["error"] == f"{path}: weights don't fit the SID network: unexpected 'junk'"
    assert result["grown"] < 50 << 20, result  # the header, not the 2 GiB (6.6 GB before the fix)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_huge_optimizer_slot_is_checked_in_pieces(tmp_path: Path) -> None:
    # a valid checkpoint whose beta1_power slot is 256 MiB of zeros (sparse on disk, with the right CRC)
    tensors = sid_tf_tensors(random_weights(NetworkSpec(width=4)), adam=False)
    end = sum(t.nbytes for t in tensors.values())  # the data file holds these back to back
    zeros, crc = np.zeros(64 << 20, np.uint8), 0
    for _ in range(SLOT_BYTES // zeros.size):
        crc = crc32c(memoryview(zeros), crc)
    slot = entry_proto(dtype=1, shape=(SLOT_BYTES // 4,), offset=end, size=SLOT_BYTES, crc=mask_crc(crc))
    prefix = write_checkpoint(tmp_path / "model.ckpt", tensors, {"beta1_power": slot})
    with open(prefix.with_name(prefix.name + ".data-00000-of-00001"), "r+b") as f:
        f.truncate(end + SLOT_BYTES)
    result = peak_while_loading(prefix.parent)
    assert result["error"] is None
    assert result["grown"] < 50 << 20, result  # pieces of 1 MiB, not the 256 MiB slot


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"g_conv1_1.bias": {"dtype": "I64", "shape": [4], "data_offsets": [0, 32]}}, "dtype 'I64'"),
        ({"g_conv1_1.bias": {"dtype": "F32", "shape": [4], "data_offsets": [0, 15]}}, "has 15 bytes for shape [4]"),
        ({"g_conv1_1.bias": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, "invalid shape"),
        ({"g_conv1_1.bias": {"dtype": "F32", "shape": [1] * 100, "data_offsets": [0, 4]}}, "invalid shape"),
        ({"g_conv1_1.bias": [1, 2]}, "is not described"),
        ({"__metadata__": {"a": 1}}, "metadata is not a table of strings"),
        (
            {"g_conv1_1.weight": {"dtype": "F32", "shape": [100_000, 4, 3, 3], "data_offsets": [0, 14_400_000]}},
            "network width 100000 is not supported",
        ),
    ],
)
def test_crafted_safetensors_headers_are_refused_in_one_line(
    tmp_path: Path, extra: dict[str, object], words: str
) -> None:
    state = small_state()
    for name in extra:
        state.pop(name, None)
    path = craft_safetensors(tmp_path / "crafted.safetensors", state, extra)
    with pytest.raises(WeightsError) as info:
        load_weights(path)
    assert words in info.value.reason and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("head", "words"),
    [
        (struct.pack("<Q", 2**63) + b"{}", "a 9,223,372,036,854,775,808-byte header in a file of 10"),
        (struct.pack("<Q", 5) + b"{'a':", "header is not JSON"),
        (struct.pack("<Q", 4) + b"[1 ]", "header is not a JSON object"),
        (struct.pack("<Q", 20_002) + b"[" * 10_001 + b"]" * 10_001, "header is not JSON"),
    ],
)
def test_safetensors_header_length_and_json_are_checked(tmp_path: Path, head: bytes, words: str) -> None:
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(head)
    with pytest.raises(WeightsError) as info:
        load_weights(path)
    assert words in info.value.reason and "\n" not in str(info.value)


def test_a_tensor_past_the_end_of_the_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = craft_safetensors(tmp_path / "short.safetensors", small_state())
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 1)  # the last tensor now ends one byte past the end
    with pytest.raises(WeightsError) as info:
        load_weights(path)
    assert "lies outside the file" in info.value.reason and "truncated or corrupt" in info.value.reason
