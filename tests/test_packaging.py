"""The wheel built from this checkout installs into a fresh venv and runs there, with its data files.

Built without build isolation (no download of setuptools: CI reaches only package
registries, and this machine's setuptools is what pyproject asks for), from a copy of
the tree so no ``build/`` or ``*.egg-info`` lands in the checkout. The fresh venv
gets seedark only from the wheel; the test environment's packages (torch, rawpy...)
are made visible to it afterwards, through a .pth file placed behind its own.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from seedark._version import __version__

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(*args: object, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PIP_NO_INDEX"] = "1"  # everything needed is here; never the network
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _pip_has_python_option() -> bool:
    """pip >= 22.3 installs into another interpreter's environment (``pip --python``)."""
    import pip

    major, minor = (int(part) for part in pip.__version__.split(".")[:2])
    return (major, minor) >= (22, 3)


def _build_wheel(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, tree, cwd=tmp_path)
    (wheel,) = out.glob("seedark-*.whl")
    return wheel


def test_wheel_installs_and_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.parser.Parser().parsestr(zf.read(meta_name).decode())
    assert {"seedark/data/coffee.jpg", "seedark/data/NOTICE", "seedark/cli/demo.py"} <= names
    assert not any(n.startswith(("tests/", "src/")) for n in names)
    assert meta["License-Expression"] == "MIT" and meta["Requires-Python"] == ">=3.10"
    assert "rawpy>=0.27" in meta.get_all("Requires-Dist")
    classifiers = meta.get_all("Classifier")
    assert {f"Programming Language :: Python :: 3.{m}" for m in (10, 11, 12, 13)} <= set(classifiers)

    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    if _pip_has_python_option():  # install from here: seconds faster than putting pip into the venv
        _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
        _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel, cwd=tmp_path)
    else:
        _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
        _run(python, "-m", "pip", "install", "--no-deps", "-q", wheel, cwd=tmp_path)
    where = "import seedark, sys; print(seedark.__file__); print(sys.prefix)"
    origin, prefix = _run(python, "-c", where, cwd=tmp_path).split()
    assert Path(origin).is_relative_to(Path(prefix)) and Path(prefix) == venv.absolute()
    assert not Path(origin).is_relative_to(ROOT / "src")

    # now the test environment's dependencies, behind the venv's own site-packages
    own = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip())
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (own / "zz_test_environment.pth").write_text("\n".join(sorted(shared)) + "\n")
    assert _run(python, "-c", where, cwd=tmp_path).split()[0] == origin  # still the wheel's seedark

    assert _run(venv / "bin" / "seedark", "--version", cwd=tmp_path).strip() == f"seedark, version {__version__}"
    assert "--ratio" in _run(venv / "bin" / "seedark", "demo", "--help", cwd=tmp_path)
    shape = "from seedark.pipeline.demo import demo_photo; print(demo_photo().shape)"
    assert _run(python, "-c", shape, cwd=tmp_path).strip() == "(400, 600, 3)"  # the photo, read from the wheel
