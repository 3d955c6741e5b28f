"""Choosing the compute device and precision, and what memory it has.

``auto`` prefers the CUDA device with the most free memory, then Apple's MPS, then
the CPU. A device asked for by name that is not there (or is nearly full) is an
error: silently running a 10x slower path is worse than telling the user.

Deciding costs no torch where the answer is the CPU and nothing else could be asked
(:func:`find_device`: ``cpu``, or ``auto`` on a Linux machine with no GPU device node),
so the OpenVINO path, whose model is cached, never loads torch; :class:`Device` names
a device without it. The precision is decided on the CPU from ``/proc/cpuinfo``'s flags.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import platform
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from seedark import config
from seedark.errors import DeviceError, UsageError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("seedark")

#: A GPU with less free memory than this is nearly full: ``auto`` warns and runs on the CPU,
#: ``cuda[:N]`` is refused. The full network's weights take ~30 MB and its smallest tiles
#: ~60 MB of activations, but the tiles a GPU is worth using for need a few hundred MB.
GPU_MIN_FREE_BYTES = 512 << 20
MB = 1 << 20
#: The precisions by name; int8 is not a dtype the network computes in: torch.int8 marks
#: "the OpenVINO model quantised by NNCF".
_DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "int8": "int8", "fp64": "float64"}
#: What a GPU driver puts in /dev or /proc on Linux (NVIDIA, NVIDIA under WSL, AMD ROCm): without
#: any of them torch finds no GPU, so ``auto`` is the CPU without asking it.
_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/dxg", "/dev/kfd")


@dataclass(frozen=True)
class Device:
    """A compute device by name (``cpu``, ``cuda:N``, ``mps``), without torch: what an engine runs on."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    @classmethod
    def of(cls, device: Any) -> Device:
        """The device a ``torch.device`` names."""
        return cls(device.type, device.index)

    def torch(self) -> torch.device:
        import torch

        return torch.device(str(self))


CPU = Device("cpu")


def out_of_memory_error() -> type[BaseException]:
    """What a device's allocator raises when it is out of memory (``torch.OutOfMemoryError`` from
    torch 2.5, ``torch.cuda.OutOfMemoryError`` before, the same class since); a RuntimeError.
    Without torch loaded nothing can raise it: a class no code raises."""
    torch = sys.modules.get("torch")
    if torch is None:
        return _NeverRaised
    return getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # type: ignore[no-any-return]


class _NeverRaised(RuntimeError):
    """Stands for torch's out-of-memory error while torch is not loaded."""


def _torch() -> Any:
    import torch

    return torch


def torch_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a precision name (``fp32``, ``bf16``, ``fp16``, ``int8``, ``fp64``)."""
    return getattr(_torch(), _DTYPE_NAMES[precision])  # type: ignore[no-any-return]


def _mps_available() -> bool:
    backend = getattr(_torch().backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _gpu_may_exist() -> bool:
    """Whether torch could find a GPU here: on Linux only with a GPU driver's device node;
    elsewhere (macOS's MPS, Windows) only torch can tell."""
    if not sys.platform.startswith("linux"):
        return True
    return any(os.path.exists(node) for node in _GPU_NODES)


def surely_cpu(name: str = "auto") -> bool:
    """Whether ``--device name`` can only be the CPU, known without torch: ``cpu``, or ``auto`` on a
    Linux machine without a GPU driver's device node (with torch loaded, it is asked instead)."""
    spec = (name or "auto").strip().lower()
    return spec == "cpu" or (spec == "auto" and "torch" not in sys.modules and not _gpu_may_exist())


def find_device(name: str = "auto") -> Device:
    """:func:`resolve_device` as a :class:`Device`; without torch where the answer can only be the CPU."""
    return CPU if surely_cpu(name) else Device.of(resolve_device(name))


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto|cpu|cuda[:N]|mps`` to an available torch.device."""
    torch = _torch()
    spec = (name or "auto").strip().lower()
    if spec == "auto":
        return _auto_device()
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
        free = cuda_free_memory(index)
        if free < GPU_MIN_FREE_BYTES:
            raise DeviceError(
                f"device {name!r} has only {free // MB} MB free (seedark needs {GPU_MIN_FREE_BYTES // MB} MB): "
                "free memory on it, or use another device"
            )
        return torch.device("cuda", index)
    if spec == "mps":
        if not _mps_available():
            raise DeviceError("device 'mps' requested but Apple MPS is not available here")
        return torch.device("mps")
    raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")


def cuda_free_memory(index: int) -> int:
    """Free memory of CUDA device ``index``, all processes counted (``cudaMemGetInfo``).

    Asking creates this process's CUDA context on that device (a few hundred MB,
    which the figure then already excludes).
    """
    free, _total = _torch().cuda.mem_get_info(index)
    return int(free)


def _auto_device() -> torch.device:
    """The CUDA device with the most free memory; MPS; the CPU (also when every GPU is nearly full)."""
    torch = _torch()
    if torch.cuda.is_available():
        free = {i: cuda_free_memory(i) for i in range(torch.cuda.device_count())}
        best = max(free, key=lambda i: (free[i], -i))  # ties: the lowest index
        if free[best] >= GPU_MIN_FREE_BYTES:
            if len(free) > 1:
                log.debug("CUDA devices' free memory (MB): %s", {i: f // MB for i, f in free.items()})
            return torch.device("cuda", best)
        log.warning(
            "every CUDA device is nearly full (%d MB free at most, %d MB needed): running on the CPU",
            free[best] // MB,
            GPU_MIN_FREE_BYTES // MB,
        )
        return torch.device("cpu")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 / AMX on x86, or Arm's BF16 extension: bf16 convs run at full speed.

    Elsewhere bf16 is emulated: measured 9x *slower* than fp32 on an AVX2 CPU
    (docs/performance.md), so asking for it there is refused rather than obeyed.
    Linux says which in ``/proc/cpuinfo`` (the flags the kernel enabled, as torch's
    own check finds them); elsewhere torch is asked.
    """
    if platform.machine().lower() in ("aarch64", "arm64"):
        return _linux_cpu_flag("bf16")
    if os.path.exists("/proc/cpuinfo"):
        return _linux_cpu_flag("avx512_bf16") or _linux_cpu_flag("amx_tile")
    cpu = _torch().cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, c, lambda: False)()) for c in checks)


def bf16_is_faster() -> bool:
    """Whether bf16 convolutions run faster than fp32 here, which is what ``auto`` asks: with AMX
    (Intel's tile units), with AMD's AVX512-BF16 (Zen 4: 2x fp32's speed, measured), with Arm's
    BF16. Intel's AVX512-BF16 without AMX (Cooper Lake, and later Xeons in VMs that hide AMX)
    issues bf16 dot products on one port where fp32 FMAs use two: OpenVINO and oneDNN measured
    1.3-1.6x *slower* than fp32 there (docs/performance.md), so ``auto`` stays fp32 on it
    (``--precision bf16`` still runs)."""
    if not cpu_has_native_bf16():
        return False
    if platform.machine().lower() in ("aarch64", "arm64"):
        return True
    if os.path.exists("/proc/cpuinfo"):
        return _linux_cpu_flag("amx_tile") or _linux_cpu_field("vendor_id") == "AuthenticAMD"
    return bool(getattr(_torch().cpu, "_is_amx_tile_supported", lambda: False)()) or "AMD" in platform.processor()


def _linux_cpu_flag(flag: str) -> bool:
    return flag in (_linux_cpu_field("flags") or _linux_cpu_field("features") or "").split()


def _linux_cpu_field(name: str) -> str | None:
    """The first value of field ``name`` in ``/proc/cpuinfo`` (``flags``, ``vendor_id``...), or None."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def auto_precision_name(device: Device | torch.device) -> str:
    """What ``auto`` runs: bf16 on a CPU where it is faster than fp32 (:func:`bf16_is_faster`),
    fp32 everywhere else.

    bf16 is the default only where it is proven: >= 45 dB PSNR against fp32 on random
    and trained full-width weights and on dark frames at ratios 100 and 300
    (docs/performance.md, ``benchmarks/bench_vs_official.py``). GPUs stay at fp32 until
    a GPU run has measured fp16/bf16 there; int8 (under 45 dB on random weights) is never
    automatic.
    """
    return "bf16" if device.type == "cpu" and bf16_is_faster() else "fp32"


def auto_precision(device: torch.device) -> torch.dtype:
    """:func:`auto_precision_name` as a torch dtype."""
    return torch_dtype(auto_precision_name(device))


def precision_for(name: str, device: Device | torch.device) -> str:
    """Map ``auto|fp32|bf16|fp16|int8`` to the name of a precision the device can run; on the
    CPU without torch.

    ``auto``: ``$SEEDARK_PRECISION`` when set, else :func:`auto_precision_name`.
    """
    spec = (name or "auto").strip().lower()
    if spec == "auto":
        spec = config.precision()
        if spec not in config.PRECISIONS:
            raise UsageError(f"unknown precision {spec!r} in ${config.PRECISION}; use {', '.join(config.PRECISIONS)}")
    if spec not in config.PRECISIONS:
        raise UsageError(f"unknown precision {name!r}; use {', '.join(config.PRECISIONS)}")
    if spec == "auto":
        return auto_precision_name(device)
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
    if device.type == "cuda" and spec == "bf16":
        cuda = _torch().cuda
        if not cuda.is_bf16_supported():
            raise DeviceError(f"bf16 is not supported on {cuda.get_device_name(device)}; use fp16 or fp32")
    return spec


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """:func:`precision_for` as a torch dtype."""
    return torch_dtype(precision_for(name, device))


def _mps_bf16() -> bool:
    return bf16_convolves(_torch().device("mps"))


def bf16_convolves(device: torch.device) -> bool:
    """Whether ``device`` runs the network's ops in bf16: a tiny convolution, pooling and
    transposed convolution, since a bf16 tensor on the device does not show that its
    convolution kernels take bf16."""
    torch = _torch()
    from torch.nn import functional

    try:
        x = torch.ones(1, 1, 4, 4, dtype=torch.bfloat16, device=device)
        kernel = torch.ones(1, 1, 3, 3, dtype=torch.bfloat16, device=device)
        y = functional.max_pool2d(functional.conv2d(x, kernel, padding=1), 2, 2, ceil_mode=True)
        y = functional.conv_transpose2d(y, torch.ones(1, 1, 2, 2, dtype=torch.bfloat16, device=device), stride=2)
        # 9 ones under the 3x3 kernel at an inner pixel; the transposed conv copies it to its 2x2 block
        return bool(float(y[0, 0, 1, 1]) == 9.0)
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def precision_name(dtype: torch.dtype) -> str:
    """``fp32``, ``bf16``, ``fp16`` or ``int8`` (and ``fp64``, which only tests run) for a dtype."""
    names = {v: k for k, v in _DTYPE_NAMES.items()}
    return names[str(dtype).removeprefix("torch.")]


def available_memory(device: Device | torch.device) -> int:
    """Bytes the next inference may use on ``device`` (free memory, not total)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else _torch().cuda.current_device()
        return _cuda_available(index)
    import psutil

    host = int(psutil.virtual_memory().available)
    if device.type == "mps":
        # Unified memory: the GPU's share is bounded by Metal's recommended working set (less what
        # the process's Metal driver holds already, cache included) and by the RAM still free.
        mps = _torch().mps
        with contextlib.suppress(AttributeError, RuntimeError):  # torch.mps.recommended_max_memory: torch >= 2.3
            metal = int(mps.recommended_max_memory() - mps.driver_allocated_memory())
            return max(0, min(metal, host))
    return host


def _cuda_available(index: int) -> int:
    """Free memory of the device plus this process's cached blocks, within its memory-fraction cap.

    ``torch.cuda.set_per_process_memory_fraction`` caps what the caching allocator may
    reserve at ``fraction x total`` (its blocks cached but unused are reusable), so what
    it can still hand out is ``fraction x total - allocated``.
    """
    cuda = _torch().cuda
    free, total = cuda.mem_get_info(index)
    allocated = cuda.memory_allocated(index)
    cached = cuda.memory_reserved(index) - allocated
    # torch.cuda.get_per_process_memory_fraction: torch >= 2.5; before it, no cap can be read.
    fraction = getattr(cuda, "get_per_process_memory_fraction", lambda _i: 1.0)(index)
    return int(max(0, min(free + cached, fraction * total - allocated)))


def release_memory(device: Device | torch.device) -> None:
    """Give the device's cached blocks back to its driver, for other processes (and, with
    unified memory, for the host) to use between frames."""
    if device.type == "cuda":
        _torch().cuda.empty_cache()
    elif device.type == "mps":
        with contextlib.suppress(AttributeError, RuntimeError):
            _torch().mps.empty_cache()


def release_after_oom(device: Device | torch.device) -> None:
    """:func:`release_memory` after an out-of-memory error (call it once the exception and its
    traceback are gone): garbage is collected first, since tensors of the failed tile
    may be held by reference cycles."""
    gc.collect()
    release_memory(device)
