"""Issue 23: close to the hardware.

* the cached CPU path (OpenVINO, its conversion on disk) imports no torch and reads no weights;
* a changed weights file is read and checked again (each version once);
* the image is written while it is computed, to exactly the bytes written after it;
* ``--tile auto`` plans the fewest tiles the memory allows.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import seedark.runtime.engine as inference
from helpers.cli import child_env
from helpers.rawgen import dark_dng
from seedark.frames.prepare import prepare_file
from seedark.io import deflate
from seedark.io.pixels import Abandoned, FinishedRows, apply_orientation
from seedark.models.architecture import NetworkSpec
from seedark.models.network import SIDUNet
from seedark.models.weights import load_weights, random_weights, save_safetensors
from seedark.models.weightsfile import WeightsFile, locate_weights
from seedark.pipeline.output import infer_and_write, plan_output, write_result
from seedark.runtime.backends import openvino_installed
from seedark.runtime.engine import Engine, EngineOptions, infer
from seedark.runtime.ircache import KnownWeights
from seedark.runtime.tiling import in_row_order, plan_tiles_fixed

needs_openvino = pytest.mark.skipif(not openvino_installed(), reason="OpenVINO is not installed")

#: Runs `seedark ARGS` in this child process and says whether torch was imported.
CLI_THEN_TORCH = (
    "import runpy, sys\n"
    "sys.argv = ['seedark', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('seedark', run_name='__main__')\n"
    "except SystemExit as exc:\n"
    "    assert not exc.code, exc.code\n"
    "print('TORCH', 'torch' in sys.modules)\n"
)


def enhance_child(home: Path, *args: object) -> tuple[bool, str]:
    """``seedark enhance ARGS -v`` in a fresh process: (torch imported, stderr)."""
    env = child_env(drop=("SEEDARK_",), SEEDARK_HOME=str(home), SEEDARK_PRECISION="fp32")
    cmd = [sys.executable, "-c", CLI_THEN_TORCH, "enhance", *map(str, args), "-v"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1] == "TORCH True", done.stderr


@pytest.fixture(scope="module")
def frame(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 1040 x 1056 raw = 520 x 528 packed: over OV_MIN_PIXELS, so OpenVINO runs it (not the torch fallback)
    return dark_dng(tmp_path_factory.mktemp("raw") / "f.dng", np.random.default_rng(5), size=(1040, 1056))


# --------------------------------------------------------------------------- 1, 2: no torch, no weights read


@needs_openvino
def test_the_cached_openvino_path_imports_no_torch_and_reads_no_weights(tmp_path: Path, frame: Path) -> None:
    weights = save_safetensors(random_weights(NetworkSpec(width=4), seed=3), tmp_path / "w.safetensors")
    common = (frame, "--weights", weights, "--ratio", 50, "--device", "cpu", "--engine", "openvino", "--overwrite")
    torch_first, said_first = enhance_child(tmp_path / "home", *common, "-o", tmp_path / "first.png")
    assert torch_first and "weights: reading" in said_first  # converting needs torch and the tensors
    torch_again, said_again = enhance_child(tmp_path / "home", *common, "-o", tmp_path / "again.png")
    assert not torch_again, said_again
    assert "weights: reading" not in said_again and "unchanged since converted; not read again" in said_again
    assert (tmp_path / "first.png").read_bytes() == (tmp_path / "again.png").read_bytes()


@needs_openvino
def test_a_changed_weights_file_is_read_and_checked_again(tmp_path: Path, frame: Path) -> None:
    weights = save_safetensors(random_weights(NetworkSpec(width=4), seed=3), tmp_path / "w.safetensors")
    common = (frame, "--weights", weights, "--ratio", 50, "--device", "cpu", "--engine", "openvino", "--overwrite")
    enhance_child(tmp_path / "home", *common, "-o", tmp_path / "a.png")
    # Other weights of the same size, the modification time put back: the change time still moves.
    before = os.stat(weights)
    data = bytearray(weights.read_bytes())
    other = save_safetensors(random_weights(NetworkSpec(width=4), seed=4), tmp_path / "other.safetensors")
    data[-4096:] = other.read_bytes()[-4096:]
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(weights).st_size == before.st_size and os.stat(weights).st_mtime_ns == before.st_mtime_ns
    torch_used, said = enhance_child(tmp_path / "home", *common, "-o", tmp_path / "b.png")
    assert torch_used and "weights: reading" in said
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "b.png").read_bytes()


def test_a_file_that_is_not_weights_is_still_refused_by_locating_it(tmp_path: Path) -> None:
    from seedark.errors import WeightsError

    bogus = tmp_path / "w.bin"
    bogus.write_bytes(b"not weights at all")
    with pytest.raises(WeightsError, match="not a TensorFlow checkpoint or safetensors file"):
        locate_weights(bogus)
    with pytest.raises(WeightsError, match="no such file or folder"):
        locate_weights(tmp_path / "missing")


def test_identity_follows_the_files(tmp_path: Path) -> None:
    path = save_safetensors(random_weights(NetworkSpec(width=4), seed=1), tmp_path / "w.safetensors")
    where = locate_weights(path)
    assert where.identity is not None and where.current_identity() == where.identity
    assert load_weights(path).identity == where.identity  # read unchanged: it keeps the identity
    os.utime(path, ns=(1, 1))
    assert where.current_identity() != where.identity


@pytest.mark.parametrize("spec", [NetworkSpec(), NetworkSpec(width=4), NetworkSpec(in_channels=9, width=8, block=3)])
def test_parameter_count_is_the_networks(spec: NetworkSpec) -> None:
    assert spec.parameter_count() == sum(p.numel() for p in SIDUNet(spec).parameters())


# --------------------------------------------------------------------------- 3: written while computed


@pytest.mark.parametrize("flip", range(8))
def test_finished_rows_follow_the_orientation(flip: int) -> None:
    h, w = 6, 9
    rows = FinishedRows(h, w, flip)
    out = np.zeros((h + 2, w + 3), dtype=np.uint8)  # larger than the image: the producer's padded array
    rows.begin(out)
    filled = np.zeros((h, w), dtype=bool)
    rng = np.random.default_rng(flip)
    cells = [(y, x) for y in range(0, h, 2) for x in range(0, w, 3)]
    for i in rng.permutation(len(cells)):
        y, x = cells[i]
        rows.filled(y, y + 2, x, x + 3)
        filled[y : y + 2, x : x + 3] = True
        oriented = apply_orientation(filled, flip)
        complete = int(np.argmin(np.append(oriented.all(axis=1), False)))
        rows.wait(complete)  # returns at once
        assert rows._ready == complete
    assert rows.image().shape == apply_orientation(filled, flip).shape


def test_an_abandoned_output_ends_every_wait() -> None:
    rows = FinishedRows(4, 4, 0)
    rows.abandon(RuntimeError("the network failed"))
    with pytest.raises(Abandoned):
        rows.image()
    with pytest.raises(Abandoned):
        rows.wait(1)


def test_tiles_run_in_the_order_that_finishes_rows() -> None:
    plan = plan_tiles_fixed(600, 700, 160)
    assert len(plan.tiles) > 4
    down = in_row_order(plan.tiles, False, False)
    assert [t.cy0 for t in down] == sorted(t.cy0 for t in plan.tiles)
    up = in_row_order(plan.tiles, False, True)
    assert [t.cy0 for t in up] == sorted((t.cy0 for t in plan.tiles), reverse=True)
    right_to_left = in_row_order(plan.tiles, True, True)
    assert [t.cx0 for t in right_to_left] == sorted((t.cx0 for t in plan.tiles), reverse=True)
    assert sorted(map(id, right_to_left)) == sorted(map(id, plan.tiles))


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(random_weights(NetworkSpec(width=4), seed=2), device="cpu", precision="fp32", backend="pytorch")


@pytest.mark.parametrize("flip", [1, 3, 6, 8])  # TIFF Orientation: none, 180 degrees, 90 CW, 90 CCW
@pytest.mark.parametrize(
    ("fmt", "bits", "compression"), [("png", 8, None), ("png", 16, None), ("tiff", 16, "deflate"), ("tiff", 8, "none")]
)
def test_written_while_computed_gives_the_same_bytes(
    tmp_path: Path, engine: Engine, flip: int, fmt: str, bits: int, compression: str | None
) -> None:
    raw = dark_dng(tmp_path / "r.dng", np.random.default_rng(flip), size=(640, 802), orientation=flip)
    prepared = prepare_file(raw, 40.0)
    settings = EngineOptions.from_kwargs(tile=64)  # many tiles, so rows are written between them
    assert len(engine.plan(*prepared.packed.shape[:2], 64).tiles) > 4
    ext = "png" if fmt == "png" else "tif"
    streamed = plan_output(raw, tmp_path / f"streamed.{ext}", bits=bits, compression=compression)
    after = plan_output(raw, tmp_path / f"after.{ext}", bits=bits, compression=compression)
    infer_and_write(streamed, prepared, engine, settings)
    image = infer(prepared, engine, tile=64, bits=bits)
    write_result(after, image, prepared, block=engine.spec.block)
    assert streamed.path.read_bytes() == after.path.read_bytes()


def test_a_failing_network_publishes_nothing(tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = dark_dng(tmp_path / "r.dng", np.random.default_rng(1), size=(640, 802))
    prepared = prepare_file(raw, 40.0)
    plan = plan_output(raw, tmp_path / "out.png", bits=16)
    calls = []
    run_one = engine.backend._run_one  # type: ignore[attr-defined]

    def fail_on_the_third(*args: object) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the network failed")
        run_one(*args)

    monkeypatch.setattr(engine.backend, "_run_one", fail_on_the_third)
    with pytest.raises(RuntimeError, match="the network failed"):
        infer_and_write(plan, prepared, engine, EngineOptions.from_kwargs(tile=64))
    assert list(tmp_path.iterdir()) == [raw]  # no image, no temporary file


@pytest.mark.parametrize(("ext", "bits"), [("tif", 16), ("png", 8)])
def test_written_bytes_are_todays(
    tmp_path: Path, engine: Engine, ext: str, bits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Digests of the bytes the code wrote before writing overlapped the network (issue 23's base
    commit, writing after the whole image was computed): the same weights, frame and tiles, and
    the same deflate (the standard library's zlib, which that commit used; the faster libraries
    write other bytes for the same pixels, test_output_formats.py)."""
    monkeypatch.setattr(deflate, "_module", lambda name: None)
    raw = dark_dng(tmp_path / "r.dng", np.random.default_rng(7), size=(520, 660), orientation=6)
    plan = plan_output(raw, tmp_path / f"out.{ext}", bits=bits)
    infer_and_write(plan, prepare_file(raw, 40.0), engine, EngineOptions.from_kwargs(tile=64))
    assert hashlib.sha256(plan.path.read_bytes()).hexdigest() == TODAYS[ext]


TODAYS = {
    "tif": "7d5f4e62d0e5f4059251056212778fc94ab9ebcf077c367cc40a7bd99f4e2f20",
    "png": "b868bb0df09c8e0c83dc6567b5bb4c40ee38adfc3e13a0c50ff2850625e1a471",
}


# --------------------------------------------------------------------------- 4: fewer tiles


@needs_openvino
def test_without_torch_auto_plans_fewer_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 12 MP frame in fp32, the weights' conversion known (so they are not read): three tiles
    with torch's libraries in the process, two without."""
    monkeypatch.setattr(inference, "available_memory", lambda _device: 16 << 30)
    unread = WeightsFile(Path("w.safetensors"), "safetensors", (), None)
    known = KnownWeights(NetworkSpec(), unread.source, unread.kind, "0" * 24, unread)
    engine = Engine(known, device="cpu", precision="fp32", backend="openvino")
    with_torch = engine.plan(1424, 2128, None, 16, held_input=False)
    monkeypatch.delitem(sys.modules, "torch")
    lean = engine.plan(1424, 2128, None, 16, held_input=False)
    assert (len(with_torch.tiles), len(lean.tiles)) == (3, 2)
    assert lean.extent == (1424, 1184)
