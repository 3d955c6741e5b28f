"""Choosing the compute device and precision.

``auto`` prefers CUDA, then Apple's MPS, then the CPU. A device asked for by
name that is not there is an error: silently running a 10x slower path is
worse than telling the user.
"""

from __future__ import annotations

import platform
import re

import torch

from seedark import config
from seedark.errors import DeviceError, UsageError

#: int8 is not a dtype the network computes in: torch.int8 marks "the OpenVINO model quantised by NNCF".
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto|cpu|cuda[:N]|mps`` to an available torch.device."""
    spec = (name or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if match:
        if not torch.cuda.is_available():
            built = "with" if torch.version.cuda else "without"
            raise DeviceError(
                f"device {name!r} requested but CUDA is not available (torch {torch.__version__}, built {built} CUDA)"
            )
        index = int(match.group(1) or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(f"device {name!r} requested but only {count} CUDA device(s) exist")
        return torch.device("cuda", index)
    if spec == "mps":
        if not _mps_available():
            raise DeviceError("device 'mps' requested but Apple MPS is not available here")
        return torch.device("mps")
    raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 / AMX on x86, or Arm's BF16 extension: bf16 convs run at full speed.

    Elsewhere bf16 is emulated: measured 9x *slower* than fp32 on an AVX2 CPU
    (docs/performance.md), so asking for it there is refused rather than obeyed.
    """
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    if any(bool(getattr(cpu, c, lambda: False)()) for c in checks):
        return True
    return platform.machine().lower() in ("aarch64", "arm64") and _linux_cpu_flag("bf16")


def _linux_cpu_flag(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("flags", "features")):
                    return flag in line.split(":", 1)[-1].split()
    except OSError:
        pass
    return False


def auto_precision(device: torch.device) -> torch.dtype:
    """What ``auto`` runs: bf16 on a CPU with native bf16, fp32 everywhere else.

    bf16 is the default only where it is proven: >= 45 dB PSNR against fp32 on random
    and trained full-width weights and on dark frames at ratios 100 and 300
    (docs/performance.md, ``benchmarks/bench_vs_official.py``). GPUs stay at fp32 until
    a GPU run has measured fp16/bf16 there; int8 (under 45 dB on random weights) is never
    automatic.
    """
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """Map ``auto|fp32|bf16|fp16|int8`` to a dtype the device can run.

    ``auto``: ``$SEEDARK_PRECISION`` when set, else :func:`auto_precision`.
    """
    spec = (name or "auto").strip().lower()
    if spec == "auto":
        spec = config.precision()
        if spec not in config.PRECISIONS:
            raise UsageError(f"unknown precision {spec!r} in ${config.PRECISION}; use {', '.join(config.PRECISIONS)}")
    if spec not in config.PRECISIONS:
        raise UsageError(f"unknown precision {name!r}; use {', '.join(config.PRECISIONS)}")
    if spec == "auto":
        return auto_precision(device)
    if spec == "fp32":
        return torch.float32
    if spec == "int8" and device.type != "cpu":
        raise DeviceError(f"int8 runs on the CPU (OpenVINO), not on {device}; use fp32, bf16 or fp16 there")
    if device.type == "cpu" and spec == "fp16":
        raise DeviceError("fp16 is not supported on the CPU (it runs in slow emulation); use bf16 or fp32")
    if device.type == "cpu" and spec == "bf16" and not cpu_has_native_bf16():
        raise DeviceError(
            "bf16 needs a CPU with native bf16 (AVX512-BF16, AMX or Arm BF16); this one would emulate it, "
            "several times slower than fp32: use fp32 (or int8, docs/performance.md)"
        )
    if device.type == "mps" and spec == "bf16" and not _mps_bf16():
        raise DeviceError("bf16 is not supported by this MPS device; use fp16 or fp32")
    if device.type == "cuda" and spec == "bf16" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"bf16 is not supported on {torch.cuda.get_device_name(device)}; use fp16 or fp32")
    return _DTYPES[spec]


def _mps_bf16() -> bool:
    try:
        torch.zeros(1, dtype=torch.bfloat16, device="mps")
    except (RuntimeError, TypeError):
        return False
    return True


def precision_name(dtype: torch.dtype) -> str:
    """``fp32``, ``bf16``, ``fp16`` or ``int8`` (and ``fp64``, which only tests run) for a dtype."""
    return "fp64" if dtype == torch.float64 else {v: k for k, v in _DTYPES.items()}[dtype]


def available_memory(device: torch.device) -> int:
    """Bytes the next inference may use on ``device`` (free memory, not total)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        try:
            return int(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory())
        except (AttributeError, RuntimeError):
            pass
    import psutil

    return int(psutil.virtual_memory().available)
