"""Camera metadata: the hand-written EXIF reader and writer."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from helpers.rawgen import SAMPLE_METADATA, write_dng
from seedark.io import exifread
from seedark.io.exifread import read_camera_metadata
from seedark.io.exifwrite import build_exif, exif_ifd
from seedark.io.image import write_image
from seedark.io.metadata import CameraMetadata
from seedark.io.raw import read_raw
from seedark.io.tiff import Ifd, layout_tiff
from seedark.pipeline.enhance import enhance_file

WEIGHTS = Path(__file__).resolve().parent / "data" / "tf_sony_w4"


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
    blob = build_exif(SAMPLE_METADATA, "seedark test")
    assert blob[:4] == b"II*\x00"
    assert read_camera_metadata(_write(tmp_path / "x.tif", blob)) == SAMPLE_METADATA


def test_build_exif_layout_and_values() -> None:
    blob = build_exif(SAMPLE_METADATA, "seedark 1.0")
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
    ifd = exif_ifd(SAMPLE_METADATA, color_space=None)
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
    path = _write(tmp_path / "x.jpg", _jpeg_with_exif(build_exif(SAMPLE_METADATA, "s")))
    assert read_camera_metadata(path) == SAMPLE_METADATA


# --------------------------------------------------------------------------- hostile input


def _parse(path: Path) -> CameraMetadata:
    """Parse with the public reader *and* without its last-resort ``except``.

    read_camera_metadata swallows any exception as a safety net; the parser itself
    must not need it, so hostile inputs go through the inner function too.
    """
    with open(path, "rb") as fh:
        strict = exifread._read_metadata(fh, os.fstat(fh.fileno()).st_size)
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


class _CountingFile(io.BytesIO):
    """A file that counts the reads made of it, and refuses to go on past ``limit`` of them."""

    def __init__(self, data: bytes, limit: int) -> None:
        super().__init__(data)
        self.reads = 0
        self.limit = limit

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        if self.reads > self.limit:
            raise RuntimeError(f"more than {self.limit} reads of a {len(self.getbuffer())}-byte file")
        return super().read(size)


def test_ifd_loops_terminate(tmp_path: Path) -> None:
    data = _loop_tiff()
    _parse(_write(tmp_path / "loop.tif", data))  # through the public reader too
    fh = _CountingFile(data, limit=1000)
    meta = exifread._read_metadata(fh, len(data))
    assert meta.make == "ABC"
    # Bounded work, not time: the file head, the TIFF header, IFD0's offset, then IFD0 read once
    # (its entry count, entries and next-IFD pointer). A loop followed round again costs 3 per IFD.
    assert fh.reads <= 7, fh.reads


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
    path = _write(tmp_path / "x.tif", build_exif(SAMPLE_METADATA, "s"))
    assert read_camera_metadata(os.fspath(path)) == SAMPLE_METADATA


def test_pillow_agrees_on_a_written_jpeg(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="JPEG", exif=b"Exif\x00\x00" + build_exif(SAMPLE_METADATA, "s"))
    path = _write(tmp_path / "p.jpg", buf.getvalue())
    assert read_camera_metadata(path) == SAMPLE_METADATA


# --------------------------------------------------------------------------- independent writers and readers

# What a camera recorded, as literal values: written by Pillow or tifffile, read by seedark.
CANON = CameraMetadata(
    make="Canon",
    model="Canon EOS 6D",
    lens_model="EF50mm f/1.8 STM",
    exposure_time=0.004,  # 1/250 s
    f_number=2.8,
    iso=6400,
    focal_length=50.0,
    datetime_original="2021:06:07 22:33:44",
)


def _pillow_camera_exif(endian: str) -> Image.Exif:
    """The shot's EXIF as Pillow builds it: IFD0 and an Exif sub-IFD."""
    exif = Image.Exif()
    exif.endian = endian
    exif[271] = "Canon"
    exif[272] = "Canon EOS 6D"
    exif[274] = 6
    exif[306] = "2020:01:02 03:04:05"  # DateTime (file changed); DateTimeOriginal must win
    sub = exif.get_ifd(0x8769)
    sub[33434] = IFDRational(1, 250)
    sub[33437] = IFDRational(28, 10)
    sub[34855] = 6400
    sub[36867] = "2021:06:07 22:33:44"
    sub[37386] = IFDRational(50, 1)
    sub[42036] = "EF50mm f/1.8 STM"
    return exif


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_reads_exif_written_by_pillow(tmp_path: Path, fmt: str, endian: str) -> None:
    path = tmp_path / f"shot.{fmt.lower()}"
    Image.new("RGB", (8, 6), (10, 20, 30)).save(path, format=fmt, exif=_pillow_camera_exif(endian).tobytes())
    if fmt == "JPEG":
        order = path.read_bytes().split(b"Exif\x00\x00", 1)[1][:2]
        assert order == (b"II" if endian == "<" else b"MM")  # the byte order asked for was written
    assert read_camera_metadata(path) == CANON


def _tifffile_dng(path: Path, mosaic: np.ndarray, byteorder: str) -> Path:
    """A CFA DNG written by tifffile, camera tags in IFD0 as some DNG writers do (not rawgen.py)."""
    matrix = (0.5838, -0.1430, -0.0246, -0.3497, 1.1477, 0.2297, -0.0748, 0.1885, 0.5778)
    tags = [
        (271, "s", 0, "Canon", True),
        (272, "s", 0, "Canon EOS 6D", True),
        (274, "H", 1, 6, True),  # rotate 90 degrees clockwise to view
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: RGGB
        (33434, "2I", 1, (1, 250), True),  # ExposureTime
        (33437, "2I", 1, (28, 10), True),  # FNumber
        (34855, "H", 1, 6400, True),  # ISOSpeedRatings
        (36867, "s", 0, "2021:06:07 22:33:44", True),  # DateTimeOriginal
        (37386, "2I", 1, (50, 1), True),  # FocalLength
        (42036, "s", 0, "EF50mm f/1.8 STM", True),  # LensModel
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50708, "s", 0, "Canon EOS 6D", True),  # UniqueCameraModel
        (50714, "H", 1, 512, True),  # BlackLevel
        (50717, "H", 1, 16383, True),  # WhiteLevel
        (50721, "2i", 9, tuple(v for m in matrix for v in (round(m * 10000), 10000)), True),  # ColorMatrix1
        (50728, "2I", 3, (1, 2, 1, 1, 1, 2), True),  # AsShotNeutral
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
    ]
    tifffile.imwrite(path, mosaic, photometric=32803, subfiletype=0, byteorder=byteorder, extratags=tags)
    return path


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_a_dng_written_by_tifffile_reads_through_read_raw(
    tmp_path: Path, rng: np.random.Generator, byteorder: str
) -> None:
    mosaic = rng.integers(520, 700, size=(40, 56), dtype=np.uint16)
    path = _tifffile_dng(tmp_path / "t.dng", mosaic, byteorder)
    assert read_camera_metadata(path) == CANON
    frame = read_raw(path)
    assert frame.camera == CANON
    assert frame.flip == 6 and frame.white_level == 16383 and frame.black_levels.tolist() == [[512, 512]] * 2
    np.testing.assert_array_equal(frame.mosaic, mosaic)


def test_enhance_carries_the_shot_exif_from_an_independent_dng_to_pillow(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """tifffile writes the camera's tags, seedark reads and re-writes them, Pillow reads them back."""
    src = _tifffile_dng(tmp_path / "t.dng", rng.integers(520, 700, size=(40, 56), dtype=np.uint16), "<")
    out = enhance_file(src, tmp_path / "t.png", weights=WEIGHTS, ratio=50)
    with Image.open(out) as im:
        assert im.size == (40, 56)  # turned upright as Orientation 6 says...
        ifd0 = im.getexif()
        exif = ifd0.get_ifd(0x8769)
    assert ifd0[274] == 1  # ...so the output says "upright"
    assert ifd0[271] == "Canon" and ifd0[272] == "Canon EOS 6D"
    assert ifd0[305].startswith("seedark ")
    assert ifd0[306] == "2021:06:07 22:33:44"
    assert (exif[33434].numerator, exif[33434].denominator) == (1, 250)
    assert float(exif[33437]) == 2.8 and exif[34855] == 6400 and float(exif[37386]) == 50.0
    assert exif[36867] == "2021:06:07 22:33:44" and exif[42036] == "EF50mm f/1.8 STM"
    assert exif[40961] == 1  # sRGB


@pytest.mark.parametrize(("fmt", "ext"), [("png", ".png"), ("tiff", ".tif"), ("jpeg", ".jpg")])
def test_pillow_reads_the_exif_seedark_writes_into_outputs(tmp_path: Path, fmt: str, ext: str) -> None:
    path = write_image(
        tmp_path / f"out{ext}",
        np.full((6, 9, 3), 0.5, np.float32),
        fmt=fmt,
        bits=8,
        metadata=CANON,
        software="seedark 9.9",
    )
    with Image.open(path) as im:
        ifd0 = im.getexif()
        exif = ifd0.get_ifd(0x8769)
    assert (ifd0[271], ifd0[272], ifd0[274], ifd0[305]) == ("Canon", "Canon EOS 6D", 1, "seedark 9.9")
    assert ifd0[306] == "2021:06:07 22:33:44"
    assert (exif[33434].numerator, exif[33434].denominator) == (1, 250)
    assert (exif[33437].numerator / exif[33437].denominator, exif[34855]) == (2.8, 6400)
    assert (exif[37386].numerator / exif[37386].denominator) == 50.0
    assert (exif[36867], exif[42036], exif[40961]) == ("2021:06:07 22:33:44", "EF50mm f/1.8 STM", 1)
