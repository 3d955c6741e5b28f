"""Device and precision resolution (no GPU needed: availability is simulated)."""

from __future__ import annotations

import pytest
import torch

from seedark.errors import DeviceError, UsageError
from seedark.runtime import devices


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda _d=None: (8 << 30, 16 << 30))


@pytest.mark.usefixtures("no_gpu")
def test_auto_without_a_gpu_is_the_cpu() -> None:
    assert devices.resolve_device("auto") == torch.device("cpu")
    assert devices.resolve_device("") == torch.device("cpu")
    assert devices.resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.usefixtures("no_gpu")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "mps"])
def test_a_missing_device_asked_for_by_name_is_an_error(name: str) -> None:
    with pytest.raises(DeviceError, match="not available"):
        devices.resolve_device(name)


@pytest.mark.usefixtures("two_gpus")
def test_cuda_first_then_by_index() -> None:
    assert devices.resolve_device("auto") == torch.device("cuda", 0)
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match="only 2 CUDA"):
        devices.resolve_device("cuda:2")


def test_mps_before_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("mps")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "gpu0"])
def test_unknown_device_names(name: str) -> None:
    with pytest.raises(UsageError, match="unknown device"):
        devices.resolve_device(name)


@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
def test_fp32_is_fp32_everywhere_and_auto_without_native_bf16(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEEDARK_PRECISION")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    for name in ("auto", "fp32", "", " AUTO "):
        assert devices.resolve_precision(name, torch.device(device)) == torch.float32


@pytest.mark.parametrize(
    ("device", "expected"), [("cpu", torch.bfloat16), ("cuda", torch.float32), ("mps", torch.float32)]
)
def test_auto_is_bf16_only_on_cpus_where_it_is_faster(
    device: str, expected: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bf16 measured >= 45 dB against fp32 (docs/performance.md); GPUs stay fp32 until measured on one.
    monkeypatch.delenv("SEEDARK_PRECISION")
    monkeypatch.setattr(devices, "bf16_is_faster", lambda: True)
    assert devices.resolve_precision("auto", torch.device(device)) == expected
    assert devices.resolve_precision("fp32", torch.device(device)) == torch.float32


@pytest.mark.parametrize(
    ("machine", "vendor", "flags", "faster"),
    [
        ("x86_64", "AuthenticAMD", "avx512f avx512_bf16", True),  # Zen 4: bf16 at twice fp32's speed
        ("x86_64", "GenuineIntel", "avx512f avx512_bf16 amx_bf16 amx_tile", True),  # AMX
        ("x86_64", "GenuineIntel", "avx512f avx512_bf16", False),  # one port for bf16: slower than fp32
        ("x86_64", "AuthenticAMD", "avx2 fma", False),  # emulated
        ("aarch64", None, "fp asimd bf16", True),
    ],
)
def test_bf16_is_faster_where_measured(
    machine: str, vendor: str | None, flags: str, faster: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = {"vendor_id": vendor, "flags" if machine == "x86_64" else "features": flags}
    monkeypatch.setattr(devices.platform, "machine", lambda: machine)
    monkeypatch.setattr(devices, "_linux_cpu_field", fields.get)
    assert devices.cpu_has_native_bf16() is ("bf16" in flags)
    assert devices.bf16_is_faster() is faster
    monkeypatch.delenv("SEEDARK_PRECISION")
    assert devices.precision_for("auto", devices.CPU) == ("bf16" if faster else "fp32")


def test_cpu_precisions(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    with pytest.raises(DeviceError, match="fp16"):
        devices.resolve_precision("fp16", cpu)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(DeviceError, match="native bf16"):
        devices.resolve_precision("bf16", cpu)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert devices.resolve_precision("bf16", cpu) == torch.bfloat16


def test_cuda_precisions(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = torch.device("cuda", 0)
    assert devices.resolve_precision("fp16", cuda) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert devices.resolve_precision("bf16", cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _d=None: "Old GPU")
    with pytest.raises(DeviceError, match="Old GPU"):
        devices.resolve_precision("bf16", cuda)


def test_mps_precisions(monkeypatch: pytest.MonkeyPatch) -> None:
    mps = torch.device("mps")
    assert devices.resolve_precision("fp16", mps) == torch.float16
    monkeypatch.setattr(devices, "_mps_bf16", lambda: False)
    with pytest.raises(DeviceError, match="MPS"):
        devices.resolve_precision("bf16", mps)


def test_unknown_precision() -> None:
    with pytest.raises(UsageError, match="unknown precision"):
        devices.resolve_precision("int4", torch.device("cpu"))


def test_seedark_precision_says_what_auto_means(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setenv("SEEDARK_PRECISION", "fp32")
    assert devices.resolve_precision("auto", torch.device("cpu")) == torch.float32
    assert devices.resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16  # a named precision wins
    monkeypatch.setenv("SEEDARK_PRECISION", "int8")
    assert devices.resolve_precision("auto", torch.device("cpu")) == torch.int8
    monkeypatch.setenv("SEEDARK_PRECISION", "fp8")
    with pytest.raises(UsageError, match=r"unknown precision 'fp8' in \$SEEDARK_PRECISION"):
        devices.resolve_precision("auto", torch.device("cpu"))


def test_int8_is_a_cpu_precision() -> None:
    assert devices.resolve_precision("int8", torch.device("cpu")) == torch.int8
    assert devices.precision_name(torch.int8) == "int8"
    with pytest.raises(DeviceError, match="int8 runs on the CPU"):
        devices.resolve_precision("int8", torch.device("cuda", 0))


def test_precision_names() -> None:
    assert [devices.precision_name(d) for d in (torch.float32, torch.bfloat16, torch.float16)] == [
        "fp32",
        "bf16",
        "fp16",
    ]


def test_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    assert devices.available_memory(torch.device("cpu")) > 0
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda _d=None: (3 << 30, 8 << 30))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda _d=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda _d=None: 0)
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda _d=None: 1.0)
    assert devices.available_memory(torch.device("cuda", 0)) == 3 << 30


def test_arm_bf16_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(devices.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(devices, "_linux_cpu_flag", lambda flag: flag == "bf16")
    assert devices.cpu_has_native_bf16()
    monkeypatch.setattr(devices.platform, "machine", lambda: "x86_64")
    assert not devices.cpu_has_native_bf16()
