"""Camera metadata: the hand-written EXIF reader and writer."""

from __future__ import annotations

import io
import os
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image

from rawgen import write_dng
from seedark import exif as exif_module
from seedark.exif import CameraMetadata, build_exif, exif_ifd, read_camera_metadata
from seedark.tiffio import Ifd, layout_tiff

FULL = CameraMetadata(
    make="Sony",
    model="ILCE-7SM2",
    lens_model="FE 35mm F2.8 ZA",
    exposure_time=1 / 30,
    f_number=2.8,
    iso=3200,
    focal_length=35.0,
    datetime_original="2026:11:25 21:30:00",
)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _pillow_exif(blob: bytes) -> tuple[Image.Exif, dict[int, Any]]:
    exif = Image.Exif()
    exif.load(b"Exif\x00\x00" + blob)
    return exif, dict(exif.get_ifd(0x8769))


def _ifd_tags(blob: bytes, offset: int) -> list[int]:
    (count,) = struct.unpack_from("<H", blob, offset)
    return [struct.unpack_from("<H", blob, offset + 2 + 12 * i)[0] for i in range(count)]


# --------------------------------------------------------------------------- writing


def test_build_exif_round_trips_through_the_reader(tmp_path: Path) -> None:
    blob = build_exif(FULL, "seedark test")
    assert blob[:4] == b"II*\x00"
    assert read_camera_metadata(_write(tmp_path / "x.tif", blob)) == FULL


def test_build_exif_layout_and_values() -> None:
    blob = build_exif(FULL, "seedark 1.0")
    ifd0_offset = struct.unpack_from("<I", blob, 4)[0]
    tags0 = _ifd_tags(blob, ifd0_offset)
    assert tags0 == sorted(tags0) == [271, 272, 274, 305, 306, 34665]
    exif_offset = 0
    for i, tag in enumerate(tags0):
        if tag == 34665:
            exif_offset = struct.unpack_from("<I", blob, ifd0_offset + 2 + 12 * i + 8)[0]
    tags_exif = _ifd_tags(blob, exif_offset)
    assert tags_exif == sorted(tags_exif)
    assert {33434, 33437, 34855, 36867, 37386, 42036, 40961} <= set(tags_exif)

    ifd0, exif = _pillow_exif(blob)
    assert ifd0[271] == "Sony" and ifd0[272] == "ILCE-7SM2"
    assert ifd0[274] == 1  # pixels are written upright
    assert ifd0[305] == "seedark 1.0"
    assert ifd0[306] == "2026:11:25 21:30:00"
    assert (exif[33434].numerator, exif[33434].denominator) == (1, 30)
    assert float(exif[33437]) == 2.8
    assert exif[34855] == 3200
    assert exif[36867] == "2026:11:25 21:30:00"
    assert float(exif[37386]) == 35.0
    assert exif[42036] == "FE 35mm F2.8 ZA"
    assert exif[40961] == 1  # sRGB


@pytest.mark.parametrize(
    ("seconds", "fraction"),
    [(1 / 30, (1, 30)), (1 / 8000, (1, 8000)), (10.0, (10, 1)), (0.3, (3, 10)), (2.5, (5, 2)), (1.0, (1, 1))],
)
def test_exposure_time_rationals(seconds: float, fraction: tuple[int, int]) -> None:
    _, exif = _pillow_exif(build_exif(CameraMetadata(exposure_time=seconds), "s"))
    value = exif[33434]
    assert (value.numerator, value.denominator) == fraction


def test_none_fields_are_omitted_and_iso_is_capped() -> None:
    blob = build_exif(CameraMetadata(iso=204800, exposure_time=float("nan")), "")
    ifd0, exif = _pillow_exif(blob)
    assert 271 not in ifd0 and 272 not in ifd0 and 306 not in ifd0 and 305 not in ifd0
    assert exif[34855] == 65535
    assert 33434 not in exif and 33437 not in exif and 42036 not in exif
    assert exif[40961] == 1


def test_bad_datetime_is_not_written() -> None:
    _, exif = _pillow_exif(build_exif(CameraMetadata(datetime_original="yesterday"), "s"))
    assert 36867 not in exif


def test_exif_ifd_without_color_space() -> None:
    ifd = exif_ifd(FULL, color_space=None)
    assert 40961 not in ifd and 33434 in ifd


# --------------------------------------------------------------------------- reading


def test_reads_the_generated_dng(tmp_path: Path, rng: np.random.Generator) -> None:
    mosaic = rng.integers(0, 16383, (16, 24), dtype=np.uint16)
    path = write_dng(tmp_path / "a.dng", mosaic, iso=12800, exposure_time=10.0)
    meta = read_camera_metadata(path)
    assert meta == CameraMetadata(
        make="Sony",
        model="ILCE-7SM2",
        lens_model="FE 35mm F2.8 ZA",
        exposure_time=10.0,
        f_number=2.8,
        iso=12800,
        focal_length=35.0,
        datetime_original="2026:11:25 21:30:00",
    )
    # An independent reader sees the same Exif IFD.
    with tifffile.TiffFile(path) as tf:
        exif = tf.pages.first.tags[34665].value
    assert exif["ExposureTime"] == (10, 1) and exif["ISOSpeedRatings"] == 12800


def _tiff_with(ifd0: Ifd) -> bytes:
    return layout_tiff(ifd0).to_bytes()


def _sample_ifd(byteorder: str = "<") -> Ifd:
    ifd = Ifd(byteorder)  # type: ignore[arg-type]
    ifd.ascii(271, "OLYMPUS IMAGING CORP.   ")
    ifd.ascii(272, "E-M5")
    exif = Ifd(byteorder)  # type: ignore[arg-type]
    exif.rational(33434, [(1, 60)])
    exif.rational(33437, [(40, 10)])
    exif.short(34855, 6400)
    ifd.sub_ifd(34665, exif)
    return ifd


@pytest.mark.parametrize(
    ("byteorder", "magic"),
    [
        ("<", b"II*\x00"),  # TIFF, ARW, NEF, DNG, PEF, CR2
        (">", b"MM\x00*"),  # big-endian TIFF, e.g. PEF/NEF from some bodies
        ("<", b"IIRO"),  # Olympus ORF
        ("<", b"IIRS"),  # Olympus ORF (some models)
        (">", b"MMOR"),  # Olympus ORF, big-endian
        ("<", b"IIU\x00"),  # Panasonic RW2
    ],
)
def test_tiff_flavours(tmp_path: Path, byteorder: str, magic: bytes) -> None:
    data = bytearray(_tiff_with(_sample_ifd(byteorder)))
    data[:4] = magic
    meta = read_camera_metadata(_write(tmp_path / "x.raw", bytes(data)))
    assert meta.make == "OLYMPUS IMAGING CORP."  # trailing spaces stripped
    assert meta.model == "E-M5"
    assert meta.exposure_time == pytest.approx(1 / 60)
    assert meta.f_number == 4.0
    assert meta.iso == 6400


def test_rw2_iso_tag(tmp_path: Path) -> None:
    ifd = Ifd()
    ifd.ascii(271, "Panasonic")
    ifd.short(23, 1600)  # Panasonic keeps ISO in IFD0 tag 0x17
    data = bytearray(_tiff_with(ifd))
    data[2:4] = b"U\x00"
    assert read_camera_metadata(_write(tmp_path / "x.rw2", bytes(data))).iso == 1600


def test_exif_tags_directly_in_ifd0(tmp_path: Path) -> None:
    ifd = Ifd()
    ifd.ascii(271, "Canon")
    ifd.rational(33434, [(1, 4)])
    ifd.short(34855, 800)
    ifd.ascii(36867, "2020:01:02 03:04:05")
    ifd.rational(37386, [(50, 1)])
    ifd.ascii(42036, "EF50mm f/1.8 STM")
    meta = read_camera_metadata(_write(tmp_path / "x.dng", _tiff_with(ifd)))
    assert meta == CameraMetadata(
        make="Canon",
        exposure_time=0.25,
        iso=800,
        focal_length=50.0,
        lens_model="EF50mm f/1.8 STM",
        datetime_original="2020:01:02 03:04:05",
    )


def test_datetime_falls_back_to_ifd0(tmp_path: Path) -> None:
    ifd = Ifd()
    ifd.ascii(306, "2021:06:07 08:09:10")
    meta = read_camera_metadata(_write(tmp_path / "x.tif", _tiff_with(ifd)))
    assert meta.datetime_original == "2021:06:07 08:09:10"


def test_strings_lose_trailing_nuls_and_spaces(tmp_path: Path) -> None:
    ifd = Ifd()
    ifd.undefined(271, b"SONY  \x00\x00\x00\x00")  # odd writers use UNDEFINED/padding
    ifd.ascii(272, "   ")
    meta = read_camera_metadata(_write(tmp_path / "x.arw", _tiff_with(ifd)))
    assert meta.make == "SONY" and meta.model is None


def test_saturated_iso_uses_the_exif23_tag(tmp_path: Path) -> None:
    ifd = Ifd()
    exif = Ifd()
    exif.short(34855, 65535)
    exif.long(34867, 409600)
    ifd.sub_ifd(34665, exif)
    assert read_camera_metadata(_write(tmp_path / "x.nef", _tiff_with(ifd))).iso == 409600


def _jpeg_with_exif(blob: bytes) -> bytes:
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    app1 = b"Exif\x00\x00" + blob
    return (
        b"\xff\xd8"
        + b"\xff\xe0"
        + struct.pack(">H", len(app0) + 2)
        + app0
        + b"\xff\xe1"
        + struct.pack(">H", len(app1) + 2)
        + app1
        + b"\xff\xda\x00\x02"
        + b"\x00" * 16
        + b"\xff\xd9"
    )


def _raf(jpeg: bytes, *, offset: int | None = None, length: int | None = None) -> bytes:
    head = b"FUJIFILMCCD-RAW 0201FF383501" + b"X-T3".ljust(32, b"\x00")
    head = head.ljust(84, b"\x00")
    start = 160
    head += struct.pack(">II", start if offset is None else offset, len(jpeg) if length is None else length)
    return head.ljust(start, b"\x00") + jpeg + b"\x00" * 64


def test_fuji_raf_reads_the_embedded_jpeg_exif(tmp_path: Path) -> None:
    meta = CameraMetadata(
        make="FUJIFILM",
        model="X-T3",
        exposure_time=1 / 15,
        iso=6400,
        f_number=1.4,
        focal_length=23.0,
        lens_model="XF23mmF1.4 R",
        datetime_original="2019:03:04 20:00:01",
    )
    raf = _raf(_jpeg_with_exif(build_exif(meta, "camera")))
    assert read_camera_metadata(_write(tmp_path / "x.raf", raf)) == meta


def test_plain_jpeg_exif(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.jpg", _jpeg_with_exif(build_exif(FULL, "s")))
    assert read_camera_metadata(path) == FULL


# --------------------------------------------------------------------------- hostile input


def _parse(path: Path) -> CameraMetadata:
    """Parse with the public reader *and* without its last-resort ``except``.

    read_camera_metadata swallows any exception as a safety net; the parser itself
    must not need it, so hostile inputs go through the inner function too.
    """
    with open(path, "rb") as fh:
        strict = exif_module._read_metadata(fh, os.fstat(fh.fileno()).st_size)
    assert read_camera_metadata(path) == strict
    return strict


def _loop_tiff() -> bytes:
    # IFD0 at 8 with 1 entry (Make) whose next-IFD pointer points back to itself, and an
    # Exif pointer that points at IFD0 too.
    entries = struct.pack("<HHI4s", 271, 2, 4, b"ABC\x00")
    entries += struct.pack("<HHII", 34665, 4, 1, 8)
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2) + entries + struct.pack("<I", 8)


HOSTILE: dict[str, bytes] = {
    "empty": b"",
    "text": b"hello, this is not a raw file\n" * 20,
    "tiff header only": b"II*\x00",
    "ifd offset past the end": b"II*\x00\xff\xff\xff\x7f",
    "huge entry count": b"II*\x00\x08\x00\x00\x00\xff\xff" + b"\x0f\x01\x02\x00" * 3,
    "string offset past the end": b"II*\x00\x08\x00\x00\x00\x01\x00"
    + struct.pack("<HHII", 271, 2, 0xFFFFFFFF, 0xFFFFFFF0)
    + b"\x00" * 4,
    "zero denominators": _tiff_with(_sample_ifd()).replace(b"<\x00\x00\x00", b"\x00" * 4),
    "raf with jpeg past the end": _raf(b"", offset=0xFFFFFFF0, length=0xFFFF),
    "raf truncated header": b"FUJIFILMCCD-RAW 0201",
    "raf bad jpeg": _raf(b"\xff\xd8\xff\xe1\x00\x00\xff\xff"),
    "jpeg zero-length segment": b"\xff\xd8\xff\xe0\x00\x00" * 10,
    "jpeg only fill bytes": b"\xff\xd8" + b"\xff" * 1000,
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_inputs_never_raise(tmp_path: Path, name: str) -> None:
    assert isinstance(_parse(_write(tmp_path / "x.raw", HOSTILE[name])), CameraMetadata)


def test_ifd_loops_terminate(tmp_path: Path) -> None:
    start = time.perf_counter()
    meta = _parse(_write(tmp_path / "loop.tif", _loop_tiff()))
    assert meta.make == "ABC"
    assert time.perf_counter() - start < 1


def test_random_bytes(tmp_path: Path, rng: np.random.Generator) -> None:
    for i in range(50):
        data = rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8).tobytes()
        if i % 2:
            data = b"II*\x00\x08\x00\x00\x00" + data  # get past the header check
        assert isinstance(_parse(_write(tmp_path / "r.raw", data)), CameraMetadata)


def test_truncated_and_corrupted_dng(tmp_path: Path, rng: np.random.Generator) -> None:
    mosaic = rng.integers(0, 16383, (8, 8), dtype=np.uint16)
    data = write_dng(tmp_path / "a.dng", mosaic).read_bytes()
    out = tmp_path / "b.dng"
    for cut in range(0, len(data), 3):
        assert isinstance(_parse(_write(out, data[:cut])), CameraMetadata)
    # The metadata (IFDs, values, Exif IFD) sits before the pixels; corrupt it there.
    head = len(data) - mosaic.nbytes
    for _ in range(300):
        bad = bytearray(data)
        for pos in rng.integers(0, head, 8):
            bad[pos] = int(rng.integers(0, 256))
        assert isinstance(_parse(_write(out, bytes(bad))), CameraMetadata)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    assert read_camera_metadata(tmp_path / "nope.dng") == CameraMetadata()
    assert read_camera_metadata(tmp_path) == CameraMetadata()


def test_reader_accepts_str_paths(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.tif", build_exif(FULL, "s"))
    assert read_camera_metadata(os.fspath(path)) == FULL


def test_pillow_agrees_on_a_written_jpeg(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="JPEG", exif=b"Exif\x00\x00" + build_exif(FULL, "s"))
    path = _write(tmp_path / "p.jpg", buf.getvalue())
    assert read_camera_metadata(path) == FULL
