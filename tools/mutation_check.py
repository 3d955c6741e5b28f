#!/usr/bin/env python3
"""Mutation check: plant known wrong answers in a copy of the code and show the tests kill each one.

Each mutant replaces one exact snippet of ``src/seedark`` (found by its text, wherever
the code has moved, and required to occur exactly once) and runs the named test files
on that copy. A mutant is *killed* when those tests fail; one that survives means a
wrong answer the suite cannot see. Run from the repository root, in the project's venv:

    python tools/mutation_check.py            # every mutant (a few minutes on 2 cores)
    python tools/mutation_check.py --list     # names only
    python tools/mutation_check.py tiff-default-8-bits loss-l2

Exit status: 0 when every mutant is killed, 1 when one survives, 2 when a snippet is
not found (the code changed: update the mutant, never delete it to make the check pass)
or when the chosen tests fail even without the mutant.
Not part of CI (it runs the chosen tests once per mutant); docs/development.md says when to run it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    why: str
    old: str
    new: str
    tests: tuple[str, ...]
    #: Also run with scikit-image made unimportable: the tests must catch it without it too.
    without_skimage: bool = False


# The official transposed-conv initialiser: truncated normal, std 0.02, resampled beyond 2 std.
_DECONV_INIT = """param.normal_(0.0, 0.02, generator=gen)
                outside = param.abs() > 0.04
                while bool(outside.any()):
                    param[outside] = torch.empty(int(outside.sum())).normal_(0.0, 0.02, generator=gen)
                    outside = param.abs() > 0.04"""

MUTANTS = [
    # The six wrong answers of issue 11.
    Mutant(
        "auto-ratio-target-0.3",
        "the auto ratio aims at 0.3 of white instead of the documented 0.12",
        "TARGET_LEVEL = 0.12",
        "TARGET_LEVEL = 0.3",
        ("tests/test_exposure.py", "tests/test_info.py"),
    ),
    Mutant(
        "ssim-k2-0.05",
        "SSIM's K2 is 0.05 instead of Wang et al.'s 0.03",
        "\nK2 = 0.03\n",
        "\nK2 = 0.05\n",
        ("tests/test_metrics.py",),
        without_skimage=True,
    ),
    Mutant(
        "loss-l2",
        "training minimises L2 instead of the paper's L1",
        "model(inp) - gt).abs().mean()",
        "model(inp) - gt).pow(2).mean()",
        ("tests/test_train_values.py",),
    ),
    Mutant(
        "tiff-default-8-bits",
        "TIFF defaults to 8 bits instead of 16",
        '"tiff": OutputFormat((".tif", ".tiff"), (16, 8)),',
        '"tiff": OutputFormat((".tif", ".tiff"), (8, 16)),',
        ("tests/test_outputs_values.py", "tests/test_cli.py"),
    ),
    Mutant(
        "compare-without-wb",
        'the --compare "before" half is drawn without the camera white balance',
        "* np.float32(wb[c])",
        "",
        ("tests/test_outputs_values.py",),
    ),
    Mutant(
        "odd-crop-wrong-side",
        "odd-size frames are cropped from the wrong side after the network",
        "image[: prepared.height, : prepared.width]",
        "image[image.shape[0] - prepared.height :, image.shape[1] - prepared.width :]",
        ("tests/test_outputs_values.py", "tests/test_enhance.py"),
    ),
    # Found worth adding while writing the tests.
    Mutant(
        "deconv-init-std-x10",
        "transposed convolutions start at std 0.2 instead of the official 0.02",
        _DECONV_INIT,
        _DECONV_INIT.replace("0.02", "0.2").replace("0.04", "0.4"),
        ("tests/test_train_values.py",),
    ),
    Mutant(
        "glorot-bound-x3",
        "convolutions start from 3x the Glorot bound of slim.conv2d",
        "bound = math.sqrt(6.0 / (fan_in + fan_out))",
        "bound = 3 * math.sqrt(6.0 / (fan_in + fan_out))",
        ("tests/test_train_values.py",),
    ),
    Mutant(
        "amplified-not-clipped",
        "the amplified input is not clipped at 1.0 (the official code clips)",
        "return np.minimum(result, np.float32(1.0), out=result)",
        "return result",
        ("tests/test_packing.py", "tests/test_outputs_values.py"),
    ),
    Mutant(
        "depth-to-space-torch-order",
        "depth-to-space in torch.pixel_shuffle's channel order instead of TensorFlow's",
        "x = x.reshape(n, block, block, out_c, h, w)\n    x = x.permute(0, 3, 4, 1, 5, 2)",
        "x = x.reshape(n, out_c, block, block, h, w)\n    x = x.permute(0, 1, 4, 2, 5, 3)",
        ("tests/test_network.py",),
    ),
    # Sensor matching (issue 21).
    Mutant(
        "sensor-match-inverted",
        "the colour map is CM_file · CM_model⁻¹, the other way round",
        "t = cm_model @ np.linalg.inv(cm_file)",
        "t = cm_file @ np.linalg.inv(cm_model)",
        ("tests/test_sensor_match.py",),
    ),
    Mutant(
        "sensor-match-sites-flattened",
        "every site of a colour takes its colour's mapped mean: the greens' offsets (texture, noise) are lost",
        "packed[..., c] += change[..., k]",
        "packed[..., c] = means[..., k] + change[..., k]",
        ("tests/test_sensor_match.py",),
    ),
    # Issue 24: the linear DNG.
    Mutant(
        "dng-srgb-curve",
        "the DNG undoes sRGB's power 1/2.4 instead of LibRaw's BT.709 curve (power 0.45)",
        "POWER = 0.45",
        "POWER = 1 / 2.4",
        ("tests/test_dng_output.py",),
    ),
    Mutant(
        "dng-matrix-transposed",
        "ColorMatrix1 is XYZ -> sRGB transposed",
        "m = np.linalg.inv(SRGB_TO_XYZ)",
        "m = np.linalg.inv(SRGB_TO_XYZ).T",
        ("tests/test_dng_output.py",),
    ),
    # Calibration and fine-tuning (issue 22).
    Mutant(
        "gain-variance-not-halved",
        "photon transfer takes the whole variance of a pair's difference (two frames' noise) for one frame's",
        "variance = float(np.square(diff).mean() * w / (w - 1) / 2.0)",
        "variance = float(np.square(diff).mean() * w / (w - 1))",
        ("tests/test_calibrate.py",),
    ),
    Mutant(
        "row-noise-read-share-kept",
        "the row noise keeps the read noise's share in each row's mean",
        "variance = float(np.mean([d.row_var for d in darks]) - share)",
        "variance = float(np.mean([d.row_var for d in darks]))",
        ("tests/test_calibrate.py",),
    ),
    Mutant(
        "finetune-match-after-amplification",
        "fine-tuning matches the colours after amplification (enhance matches them before): clipped highlights mapped",
        "        match_colours(packed, match, sub.sensor)\n    inp = amplify(packed, ratio)",
        "        inp = match_colours(amplify(packed, ratio), match, sub.sensor)\n"
        "    else:\n        inp = amplify(packed, ratio)",
        ("tests/test_finetune.py",),
    ),
]


def _copy_tree(dest: Path) -> None:
    for name in ("src", "tests", "pyproject.toml"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)


def _apply(tree: Path, mutant: Mutant) -> Path:
    """Replace the mutant's snippet in the copy; it must occur exactly once in src/seedark."""
    hits = []
    for path in sorted((tree / "src" / "seedark").rglob("*.py")):
        count = path.read_text().count(mutant.old)
        hits += [path] * count
    if len(hits) != 1:
        raise LookupError(f"{mutant.name}: the snippet occurs {len(hits)} times in src/seedark, not once")
    text = hits[0].read_text()
    hits[0].write_text(text.replace(mutant.old, mutant.new))
    return hits[0]


def _no_skimage(folder: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes ``import skimage`` fail as if it were not installed."""
    package = folder / "skimage"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'skimage'\", name='skimage')\n")
    return folder


def _run_tests(tree: Path, tests: tuple[str, ...], env: dict[str, str]) -> int:
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    return done.returncode


def _env(tmp: Path, block_skimage: bool) -> dict[str, str]:
    env = dict(os.environ)
    if block_skimage:
        env["PYTHONPATH"] = str(_no_skimage(tmp / "noskimage"))
    return env


def check(mutant: Mutant) -> list[tuple[str, str]]:
    """[(variant, verdict)] for the mutant: verdict is 'killed' or 'SURVIVED'.

    The chosen tests must pass on the unmutated copy first: a failure that is not
    the mutant's doing proves nothing.
    """
    results = []
    variants = [("", False)] + ([(" (no scikit-image)", True)] if mutant.without_skimage else [])
    with tempfile.TemporaryDirectory(prefix="seedark-mutant-") as tmp:
        tree = Path(tmp) / "tree"
        _copy_tree(tree)
        for label, block in variants:
            code = _run_tests(tree, mutant.tests, _env(Path(tmp), block))
            if code != 0:
                raise RuntimeError(f"{mutant.name}{label}: the tests fail without the mutant (pytest exit {code})")
        where = _apply(tree, mutant)
        for label, block in variants:
            code = _run_tests(tree, mutant.tests, _env(Path(tmp), block))
            # 1: tests failed (killed). 0: all passed (survived). Anything else is a broken run.
            verdict = {0: "SURVIVED", 1: "killed"}.get(code, f"error (pytest exit {code})")
            results.append((f"{mutant.name}{label} [{where.relative_to(tree)}]", verdict))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:28} {m.why}")
        return 0
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants: {', '.join(sorted(unknown))}")
    status = 0
    for mutant in chosen:
        try:
            results = check(mutant)
        except LookupError as exc:
            print(f"NOT FOUND  {exc}", flush=True)
            status = max(status, 2)
            continue
        except RuntimeError as exc:
            print(f"BASELINE   {exc}", flush=True)
            status = max(status, 2)
            continue
        for label, verdict in results:
            print(f"{verdict:9}  {label}: {mutant.why}", flush=True)
            if verdict != "killed":
                status = max(status, 1)
    return status


if __name__ == "__main__":
    sys.exit(main())
