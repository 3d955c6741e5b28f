"""Reading TF checkpoints without TensorFlow: the official index and a TF-made fixture."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import run_cli
from helpers.tfwriter import entry_proto, sid_tf_tensors, write_checkpoint
from seedark.errors import WeightsError
from seedark.models.network import NetworkSpec
from seedark.models.tfcheckpoint import (
    MAX_INDEX_BYTES,
    crc32c,
    crc32c_pure,
    expected_data_size,
    is_optimizer_slot,
    masked_crc32c,
    read_checkpoint,
    read_index,
    resolve_prefix,
    verify_data_file,
)
from seedark.models.weights import load_weights, random_weights

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "tf_sony_w4"


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    dest = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, dest)
    return dest


def test_crc32c_known_vector_and_fallback_agree() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c_pure(b"123456789") == 0xE3069283
    data = bytes(range(256)) * 3
    assert crc32c(data) == crc32c_pure(data)
    assert masked_crc32c(b"") == 0xA282EAD8  # mask of crc 0


@pytest.mark.parametrize(
    ("name", "sha", "data_size", "out_channels", "in_channels"),
    [
        ("sony", "56ec48578a4890933f98287872568f90aaa0d4a6e38fc1e78b21dc760e3af424", 87_552_664, 12, 4),
        ("fuji", "ff1343bf295b37700dcfe583fcb02af0529d90cada194533abfcb966b470bd31", 87_575_884, 27, 9),
    ],
)
def test_reads_the_official_index(name: str, sha: str, data_size: int, out_channels: int, in_channels: int) -> None:
    path = DATA / f"official-{name}-model.ckpt.index"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    header, entries = read_index(path)
    assert header.num_shards == 1
    assert len(entries) == 120
    assert expected_data_size(entries) == data_size
    net = {n: e for n, e in entries.items() if not is_optimizer_slot(n)}
    assert len(net) == 42  # 19 convs x (weights, biases) + 4 transposed-conv filters
    assert net["g_conv1_1/weights"].shape == (3, 3, in_channels, 32)
    assert net["g_conv10/weights"].shape == (1, 1, 32, out_channels)
    assert net["Variable"].shape == (2, 2, 256, 512)
    assert net["Variable_3"].shape == (2, 2, 32, 64)
    assert all(e.dtype == np.float32 for e in entries.values())
    params = sum(int(np.prod(e.shape)) for e in net.values())
    assert params == (7_760_268 if name == "sony" else 7_760_268 + 5 * 9 * 32 + 15 * 32 + 15)


def test_optimizer_slots_are_skipped() -> None:
    tensors = read_checkpoint(FIXTURE)
    assert tensors and not any("Adam" in n or "power" in n for n in tensors)
    everything = read_checkpoint(FIXTURE, include=lambda n: True)
    assert "g_conv1_1/weights/Adam" in everything and "beta1_power" in everything


@pytest.mark.parametrize("given", ["dir", "prefix", "index", "data"])
def test_checkpoint_given_as_dir_prefix_or_file(given: str) -> None:
    arg = {
        "dir": FIXTURE,
        "prefix": FIXTURE / "model.ckpt",
        "index": FIXTURE / "model.ckpt.index",
        "data": FIXTURE / "model.ckpt.data-00000-of-00001",
    }[given]
    assert resolve_prefix(arg) == FIXTURE / "model.ckpt"
    assert load_weights(arg).spec.width == 4


def test_corrupt_tensor_fails_crc(ckpt: Path) -> None:
    data = ckpt / "model.ckpt.data-00000-of-00001"
    _, entries = read_index(ckpt / "model.ckpt.index")
    target = entries["g_conv5_2/weights"]
    blob = bytearray(data.read_bytes())
    blob[target.offset + 17] ^= 0x40
    data.write_bytes(bytes(blob))
    with pytest.raises(WeightsError, match=r"g_conv5_2/weights.*CRC32C") as info:
        load_weights(ckpt)
    assert info.value.path == data
    with pytest.raises(WeightsError, match="CRC32C"):
        verify_data_file(ckpt / "model.ckpt.index", data)


def test_truncated_data_file(ckpt: Path) -> None:
    data = ckpt / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-1000])
    with pytest.raises(WeightsError, match="truncated"):
        read_checkpoint(ckpt, include=lambda n: True)
    with pytest.raises(WeightsError, match="bytes, the index expects"):
        verify_data_file(ckpt / "model.ckpt.index", data)


def test_missing_data_file(ckpt: Path) -> None:
    (ckpt / "model.ckpt.data-00000-of-00001").unlink()
    with pytest.raises(WeightsError, match="data file missing"):
        load_weights(ckpt)


def test_corrupt_index_block(ckpt: Path) -> None:
    index = ckpt / "model.ckpt.index"
    blob = bytearray(index.read_bytes())
    blob[40] ^= 0xFF
    index.write_bytes(bytes(blob))
    with pytest.raises(WeightsError, match="invalid checkpoint index"):
        load_weights(ckpt)


def test_not_an_index(tmp_path: Path) -> None:
    bogus = tmp_path / "model.ckpt.index"
    bogus.write_bytes(b"hello" * 20)
    with pytest.raises(WeightsError, match="bad table magic"):
        read_index(bogus)


def test_official_index_with_mismatched_data_is_refused(tmp_path: Path) -> None:
    shutil.copy(DATA / "official-sony-model.ckpt.index", tmp_path / "model.ckpt.index")
    data = tmp_path / "model.ckpt.data-00000-of-00001"
    with open(data, "wb") as f:
        f.truncate(87_552_664)  # right size, wrong bytes
    with pytest.raises(WeightsError, match="CRC32C"):
        load_weights(tmp_path)


def test_folder_with_several_checkpoints(tmp_path: Path) -> None:
    for name in ("a.ckpt", "b.ckpt"):
        for f in FIXTURE.glob("model.ckpt.*"):
            shutil.copy(f, tmp_path / f.name.replace("model.ckpt", name))
    with pytest.raises(WeightsError, match=r"several checkpoints here \(a.ckpt.index, b.ckpt.index\)"):
        resolve_prefix(tmp_path)
    # TF's own state file picks one
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "b.ckpt"\nall_model_checkpoint_paths: "b.ckpt"\n')
    assert resolve_prefix(tmp_path) == tmp_path / "b.ckpt"
    assert load_weights(tmp_path).spec.width == 4


# --------------------------------------------------------------------------- crafted indexes

F32 = 1
EMPTY_CRC = masked_crc32c(b"")
# Each crafted entry replaces an optimizer slot (which the network check does not look at), so
# only the entry's own values can refuse it; the words are what the one-line error must say.
CRAFTED = {
    "shape-wraps-int64": (entry_proto(dtype=F32, shape=(2**32, 2**32), size=0, crc=EMPTY_CRC), "records 0 bytes"),
    "size-2^62": (entry_proto(dtype=F32, shape=(2**60,), size=2**62), "past the end of the file"),
    "offset-2^63": (entry_proto(dtype=F32, shape=(1,), offset=2**63, size=4), "past the end of the file"),
    "rank-100000": (entry_proto(dtype=F32, shape=(1,) * 100_000, size=4), "more than 32 dimensions"),
    "shard-7-of-1": (entry_proto(dtype=F32, shape=(1,), shard=7, size=4), "data file 7 of 1"),
}
SLOT = "g_conv1_1/biases/Adam"


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tensors = sid_tf_tensors(random_weights(NetworkSpec(width=4)), seed=3)
    root = tmp_path_factory.mktemp("crafted")
    return {
        case: write_checkpoint(root / case / "model.ckpt", tensors, {SLOT: proto}).parent
        for case, (proto, _) in CRAFTED.items()
    }


def one_line_refusal(call: Callable[[], object], words: str) -> WeightsError:
    with pytest.raises(WeightsError) as info:
        call()
    assert words in info.value.reason and "\n" not in str(info.value)
    return info.value


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_index_entries_are_refused_before_any_read(crafted: dict[str, Path], case: str) -> None:
    folder, words = crafted[case], CRAFTED[case][1]
    one_line_refusal(lambda: load_weights(folder), words)
    one_line_refusal(lambda: read_checkpoint(folder, include=lambda n: True), words)
    # the check used on downloads before anything is kept: the index's size no longer matches,
    # or the entry itself is refused
    with pytest.raises(WeightsError) as info:
        verify_data_file(folder / "model.ckpt.index", folder / "model.ckpt.data-00000-of-00001")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("case", ["shape-wraps-int64", "offset-2^63", "rank-100000"])
def test_crafted_index_through_the_cli_is_one_line_and_caches_nothing(
    crafted: dict[str, Path],
    case: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SEEDARK_HOME", str(tmp_path / "home"))
    code, _, err = run_cli(capsys, "models", "import", "mine", crafted[case], "--unverified")
    assert code == 1
    assert err.startswith("seedark: error: ") and CRAFTED[case][1] in err and err.count("\n") == 1
    assert not (tmp_path / "home" / "models" / "mine").exists()


def test_an_index_too_large_to_be_one_is_not_read(tmp_path: Path) -> None:
    index = tmp_path / "model.ckpt.index"
    with open(index, "wb") as f:
        f.truncate(MAX_INDEX_BYTES + 1)  # sparse: reading it whole would take 64 MiB for nothing
    one_line_refusal(lambda: read_index(index), "not a checkpoint index")


def test_a_tensor_the_network_has_no_use_for_is_refused_before_the_data_is_read(tmp_path: Path) -> None:
    tensors = sid_tf_tensors(random_weights(NetworkSpec(width=4)), adam=False)
    huge = entry_proto(dtype=F32, shape=(2**29,), offset=0, size=2**31)  # 2 GiB that is never there
    folder = write_checkpoint(tmp_path / "model.ckpt", tensors, {"extra/weights": huge}).parent
    one_line_refusal(lambda: load_weights(folder), "unexpected tensor 'extra/weights'")


def test_slots_are_checked_in_pieces(tmp_path: Path) -> None:
    # a 9 MiB optimizer slot, read and CRC-checked piece by piece, must match exactly as read whole
    rng = np.random.default_rng(5)
    tensors = sid_tf_tensors(random_weights(NetworkSpec(width=4)), adam=False)
    tensors["g_conv1_1/weights/Adam"] = rng.normal(size=(3, 3, 4, 4)).astype(np.float32)
    tensors["beta1_power"] = rng.normal(size=(9 << 18,)).astype(np.float32)
    folder = write_checkpoint(tmp_path / "model.ckpt", tensors).parent
    got = read_checkpoint(folder, include=lambda n: True)
    assert np.array_equal(got["beta1_power"], tensors["beta1_power"])
    verify_data_file(folder / "model.ckpt.index", folder / "model.ckpt.data-00000-of-00001")
    data = folder / "model.ckpt.data-00000-of-00001"
    _, entries = read_index(folder / "model.ckpt.index")
    blob = bytearray(data.read_bytes())
    blob[entries["beta1_power"].offset + (5 << 20) + 3] ^= 0x10  # in the sixth piece
    data.write_bytes(bytes(blob))
    one_line_refusal(lambda: load_weights(folder), "'beta1_power' fails its CRC32C check")
