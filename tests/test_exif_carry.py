"""Metadata that survives: GPS, rights, lens, time zone and XMP from the RAW into every output.

The DNGs carry literal values; the outputs are read back by Pillow and tifffile (never
by seedark's reader) and each value is compared with the literal.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image

from helpers.cli import run_cli
from helpers.rawgen import dark_dng
from seedark.errors import OutputError, UsageError
from seedark.io.exifread import read_camera_metadata
from seedark.io.exifwrite import build_exif
from seedark.io.image import write_image
from seedark.io.metadata import EXIF, GPS, IFD0, CameraMetadata, ExifTag
from seedark.io.tiff import Ifd, TiffType, layout_tiff
from seedark.io.xmp import MAX_XMP, clean_xmp, jpeg_segment
from seedark.pipeline.batch import run_batch
from seedark.pipeline.enhance import enhance_file

WEIGHTS = Path(__file__).resolve().parent / "data" / "tf_sony_w4"

A, R, SR, U, S = TiffType.ASCII, TiffType.RATIONAL, TiffType.SRATIONAL, TiffType.UNDEFINED, TiffType.SHORT
COMMENT = "Nacht über Köln"  # not ASCII: must stay UCS-2, not become "Nacht uber Koln"

#: What the camera wrote, beyond the named fields.
SHOT_TAGS = (
    ExifTag(IFD0, 270, A, "Cathedral at night"),
    ExifTag(IFD0, 315, A, "Jane Doe"),
    ExifTag(IFD0, 33432, A, "(c) 2026 Jane Doe"),
    ExifTag(EXIF, 36881, A, "+01:00"),  # OffsetTimeOriginal
    ExifTag(EXIF, 36880, A, "+01:00"),  # OffsetTime
    ExifTag(EXIF, 37521, A, "042"),  # SubSecTimeOriginal
    ExifTag(EXIF, 37510, U, COMMENT),  # UserComment
    ExifTag(EXIF, 37380, SR, ((-7, 10),)),  # ExposureBiasValue
    ExifTag(EXIF, 34850, S, (1,)),  # ExposureProgram: manual
    ExifTag(EXIF, 37385, S, (16,)),  # Flash: did not fire
    ExifTag(EXIF, 41989, S, (35,)),  # FocalLengthIn35mmFilm
    ExifTag(EXIF, 42035, A, "Sony"),  # LensMake
    ExifTag(EXIF, 42034, R, ((35, 1), (35, 1), (28, 10), (28, 10))),  # LensSpecification
    ExifTag(EXIF, 42037, A, "0001234"),  # LensSerialNumber
    ExifTag(EXIF, 37500, U, b"SONY DSC \0\0\0maker note"),  # MakerNote: must be dropped
    ExifTag(EXIF, 37396, S, (10, 12, 4, 4)),  # SubjectArea (RAW pixels): must be dropped
    ExifTag(GPS, 0, TiffType.BYTE, (2, 3, 0, 0)),
    ExifTag(GPS, 1, A, "N"),
    ExifTag(GPS, 2, R, ((50, 1), (56, 1), (2910, 100))),
    ExifTag(GPS, 3, A, "E"),
    ExifTag(GPS, 4, R, ((6, 1), (57, 1), (4, 1))),
    ExifTag(GPS, 5, TiffType.BYTE, (0,)),
    ExifTag(GPS, 6, R, ((53, 1),)),
    ExifTag(GPS, 7, R, ((20, 1), (30, 1), (0, 1))),
    ExifTag(GPS, 29, A, "2026:11:25"),
)

XMP_NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "dc": "http://purl.org/dc/elements/1.1/",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
    "crs": "http://ns.adobe.com/camera-raw-settings/1.0/",
}


def xmp_packet(rating: int, keywords: list[str], *, orientation: int = 6) -> bytes:
    """An XMP packet as Lightroom writes one: attributes, a keyword bag, develop settings, padding."""
    items = "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
        'xmlns:exif="http://ns.adobe.com/exif/1.0/" '
        'xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/" '
        f'xmp:Rating="{rating}" tiff:Orientation="{orientation}" exif:PixelXDimension="4000" '
        'crs:Exposure2012="+1.50">'
        f"<dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject>"
        "<crs:ToneCurvePV2012><rdf:Seq><rdf:li>0, 0</rdf:li></rdf:Seq></crs:ToneCurvePV2012>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>\n" + " " * 2048 + '\n<?xpacket end="w"?>'
    ).encode()


def parse_xmp(packet: bytes | str) -> dict[str, Any]:
    """Rating, keywords, orientation and what should be gone, read with ElementTree."""
    text = packet.decode() if isinstance(packet, bytes) else packet
    root = ET.fromstring(text[text.index("<x:xmpmeta") : text.rindex("</x:xmpmeta>") + len("</x:xmpmeta>")])
    desc = root.find(".//rdf:Description", XMP_NS)
    assert desc is not None
    attrs = desc.attrib
    keywords = [li.text for li in desc.findall("dc:subject/rdf:Bag/rdf:li", XMP_NS)]
    return {
        "rating": attrs.get(f"{{{XMP_NS['xmp']}}}Rating"),
        "keywords": keywords,
        "orientation": attrs.get(f"{{{XMP_NS['tiff']}}}Orientation"),
        "crs": [k for k in attrs if XMP_NS["crs"] in k] + [e.tag for e in desc if XMP_NS["crs"] in e.tag],
        "pixel_x": attrs.get("{http://ns.adobe.com/exif/1.0/}PixelXDimension"),
    }


def shot_dng(path: Path, rng: np.random.Generator, **kwargs: Any) -> Path:
    return dark_dng(path, rng, **{"orientation": 6, "tags": SHOT_TAGS, "strings": {50735: b"3301234"}, **kwargs})


def output_xmp(path: Path) -> bytes | str:
    if path.suffix == ".tif":
        with tifffile.TiffFile(path) as tif:
            return bytes(tif.pages[0].tags[700].value)
    with Image.open(path) as im:
        return im.info["XML:com.adobe.xmp"] if path.suffix == ".png" else im.info["xmp"]


def as_pairs(values: Any) -> list[tuple[int, int]]:
    values = values if isinstance(values, tuple) else (values,)
    return [(int(v.numerator), int(v.denominator)) for v in values]


@pytest.mark.parametrize("ext", [".png", ".tif", ".jpg"])
def test_the_camera_metadata_reaches_every_format(tmp_path: Path, rng: np.random.Generator, ext: str) -> None:
    raw = shot_dng(tmp_path / "shot.dng", rng, xmp=xmp_packet(4, ["night", "Köln"]))
    os.utime(raw, ns=(1_000_000_000_000_000_000, 1_234_567_890_123_456_789))
    out = enhance_file(raw, tmp_path / f"out{ext}", weights=WEIGHTS, ratio=50, keep_mtime=True)
    assert os.stat(out).st_mtime_ns == 1_234_567_890_123_456_789  # --keep-mtime
    with Image.open(out) as im:
        size = im.size
        ifd0 = im.getexif()
        exif, gps = dict(ifd0.get_ifd(0x8769)), dict(ifd0.get_ifd(0x8825))
    assert size == (40, 56)  # turned upright (Orientation 6)...
    assert ifd0[274] == 1  # ...so the output says upright
    assert (exif[40961], exif[40960]) == (1, b"0100")  # sRGB
    if ext == ".tif":  # EXIF keeps PixelX/YDimension for compressed images; a TIFF has its own size tags
        assert 40962 not in exif and (ifd0[256], ifd0[257]) == (40, 56)
    else:
        assert (exif[40962], exif[40963]) == (40, 56)  # the output's size, not the RAW's
    if ext == ".jpg":  # what EXIF requires of a JPEG
        assert (exif[37121], float(ifd0[282]), ifd0[296], ifd0[531]) == (b"\x01\x02\x03\x00", 72.0, 2, 1)
    assert (ifd0[271], ifd0[272], ifd0[270], ifd0[315], ifd0[33432]) == (
        "Sony",
        "ILCE-7SM2",
        "Cathedral at night",
        "Jane Doe",
        "(c) 2026 Jane Doe",
    )
    assert (exif[36867], exif[36881], exif[36880], exif[37521]) == ("2026:11:25 21:30:00", "+01:00", "+01:00", "042")
    assert exif[37510] == b"UNICODE\0" + COMMENT.encode("utf-16-le")
    assert (exif[42036], exif[42035], exif[42037], exif[42033]) == ("FE 35mm F2.8 ZA", "Sony", "0001234", "3301234")
    assert as_pairs(exif[42034]) == [(35, 1), (35, 1), (28, 10), (28, 10)]
    assert as_pairs(exif[33434]) == [(1, 30)] and float(exif[33437]) == 2.8 and exif[34855] == 3200
    assert float(exif[37380]) == -0.7 and (exif[34850], exif[37385], exif[41989]) == (1, 16, 35)
    assert 37500 not in exif and 37396 not in exif  # maker note and RAW pixel coordinates dropped
    assert gps[0] == b"\x02\x03\x00\x00" and (gps[1], gps[3], gps[29]) == ("N", "E", "2026:11:25")
    assert [float(v) for v in gps[2]] == [50.0, 56.0, 29.1] and [float(v) for v in gps[4]] == [6.0, 57.0, 4.0]
    assert (gps[5], float(gps[6]), [float(v) for v in gps[7]]) == (b"\x00", 53.0, [20.0, 30.0, 0.0])
    xmp = parse_xmp(output_xmp(out))
    assert (xmp["rating"], xmp["keywords"], xmp["orientation"]) == ("4", ["night", "Köln"], "1")
    assert xmp["crs"] == [] and xmp["pixel_x"] is None  # development settings and RAW size dropped


def test_without_keep_mtime_the_output_has_its_own_time(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = shot_dng(tmp_path / "shot.dng", rng)
    os.utime(raw, ns=(10**18, 10**18))
    out = enhance_file(raw, tmp_path / "out.png", weights=WEIGHTS, ratio=50)
    assert os.stat(out).st_mtime_ns != 10**18


def test_keep_mtime_when_the_raw_is_gone_writes_nothing(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = shot_dng(tmp_path / "shot.dng", rng)

    def remove_raw(done: int, total: int) -> None:
        raw.unlink(missing_ok=True)  # gone after decoding, before the image is written

    with pytest.raises(OutputError, match="cannot read the RAW file's time for --keep-mtime") as info:
        enhance_file(raw, tmp_path / "out.png", weights=WEIGHTS, ratio=50, keep_mtime=True, progress=remove_raw)
    assert info.value.path == raw
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_batch_keeps_each_raws_mtime(tmp_path: Path, rng: np.random.Generator) -> None:
    raws = [shot_dng(tmp_path / f"s{i}.dng", rng) for i in range(2)]
    for i, raw in enumerate(raws):
        os.utime(raw, ns=(10**18, 10**18 + i * 10**9))
    report = run_batch(raws, tmp_path / "out", weights=WEIGHTS, ratio=50, keep_mtime=True, isolate=False)
    assert len(report.converted) == 2
    assert [os.stat(tmp_path / "out" / f"s{i}.png").st_mtime_ns for i in range(2)] == [10**18, 10**18 + 10**9]


def test_keep_mtime_is_refused_with_a_cluster(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = shot_dng(tmp_path / "s.dng", rng)
    with pytest.raises(UsageError, match="--keep-mtime does not work with --cluster"):
        run_batch([raw], weights=WEIGHTS, keep_mtime=True, cluster="ray")


def test_cli_keep_mtime(tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]) -> None:
    raw = shot_dng(tmp_path / "s.dng", rng)
    os.utime(raw, ns=(10**18, 1_500_000_000_000_000_000))
    out = tmp_path / "s.jpg"
    code, _, _ = run_cli(capsys, "enhance", raw, "-o", out, "--weights", WEIGHTS, "--ratio", "50", "--keep-mtime")
    assert code == 0
    assert os.stat(out).st_mtime_ns == 1_500_000_000_000_000_000


# --------------------------------------------------------------------------- XMP: which packet


def test_a_sidecar_wins_over_the_embedded_packet(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = shot_dng(tmp_path / "p.dng", rng, xmp=xmp_packet(1, ["embedded"]))
    assert parse_xmp(read_camera_metadata(raw).xmp or b"")["keywords"] == ["embedded"]
    (tmp_path / "p.xmp").write_bytes(xmp_packet(3, ["lightroom"]))  # Lightroom's name
    assert parse_xmp(read_camera_metadata(raw).xmp or b"")["keywords"] == ["lightroom"]
    (tmp_path / "p.dng.xmp").write_bytes(xmp_packet(5, ["darktable"]))  # darktable's name comes first
    meta = read_camera_metadata(raw)
    assert parse_xmp(meta.xmp or b"")["keywords"] == ["darktable"]
    out = write_image(
        tmp_path / "o.png", np.zeros((4, 6, 3), np.float32), fmt="png", bits=8, metadata=meta, software=""
    )
    assert parse_xmp(output_xmp(out)) == {
        "rating": "5",
        "keywords": ["darktable"],
        "orientation": "1",
        "crs": [],
        "pixel_x": None,
    }


def test_a_broken_sidecar_is_passed_over(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = shot_dng(tmp_path / "p.dng", rng, xmp=xmp_packet(1, ["embedded"]))
    (tmp_path / "p.dng.xmp").write_bytes(b"<x:xmpmeta><rdf:RDF")  # truncated
    (tmp_path / "p.xmp").write_bytes(xmp_packet(2, ["next"]))
    assert parse_xmp(read_camera_metadata(raw).xmp or b"")["keywords"] == ["next"]
    (tmp_path / "p.xmp").write_bytes(b"\xff\xfe not utf-8")
    assert parse_xmp(read_camera_metadata(raw).xmp or b"")["keywords"] == ["embedded"]


def test_a_raw_without_xmp_writes_none(tmp_path: Path, rng: np.random.Generator) -> None:
    meta = read_camera_metadata(shot_dng(tmp_path / "p.dng", rng))
    assert meta.xmp is None
    out = write_image(
        tmp_path / "o.jpg", np.zeros((4, 6, 3), np.float32), fmt="jpeg", bits=8, metadata=meta, software=""
    )
    with Image.open(out) as im:
        assert "xmp" not in im.info


BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="">&lol2;</rdf:Description></rdf:RDF></x:xmpmeta>'
)


@pytest.mark.parametrize(
    "packet",
    [
        BILLION_LAUGHS,
        b"",
        b"not xml at all",
        b"<a><b></a>",
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><nothing/></x:xmpmeta>',  # no rdf:RDF
        "<x:xmpmeta>é</x:xmpmeta>".encode("latin-1"),  # not UTF-8
        b"<a>" + b" " * MAX_XMP + b"</a>",  # too large
    ],
)
def test_hostile_or_broken_packets_are_dropped(packet: bytes) -> None:
    assert clean_xmp(packet) is None


def test_a_packet_too_large_for_a_jpeg_segment_is_left_out_of_jpegs_only(tmp_path: Path) -> None:
    assert jpeg_segment(b"x" * 65504) is not None  # 2 + 29 + 65504 = 65535, the most a segment holds
    assert jpeg_segment(b"x" * 65505) is None
    segment = jpeg_segment(b"<x/>")
    assert segment is not None and segment[:2] == b"\xff\xe1"
    assert struct.unpack(">H", segment[2:4])[0] == len(segment) - 2
    meta = CameraMetadata(make="Sony", xmp=clean_xmp(xmp_packet(4, ["k" * 70000])))
    pixels = np.zeros((4, 6, 3), np.float32)
    jpeg = write_image(tmp_path / "o.jpg", pixels, fmt="jpeg", bits=8, metadata=meta, software="")
    with Image.open(jpeg) as im:
        assert "xmp" not in im.info and im.getexif()[271] == "Sony"
    png = write_image(tmp_path / "o.png", pixels, fmt="png", bits=8, metadata=meta, software="")
    assert parse_xmp(output_xmp(png))["keywords"] == ["k" * 70000]


# --------------------------------------------------------------------------- EXIF: reading and limits


def test_unicode_comment_from_a_big_endian_file_is_rewritten_little_endian(tmp_path: Path) -> None:
    """NEF-style big-endian EXIF: UCS-2 in the file's byte order must be turned, not mangled."""
    ifd0 = Ifd(">")
    ifd0.ascii(271, "NIKON CORPORATION")
    ifd0.ascii(315, "Zoë Müller")  # ASCII tag: becomes 7-bit (TIFF's rule), readable
    exif = Ifd(">")
    exif.undefined(37510, b"UNICODE\0" + COMMENT.encode("utf-16-be"))
    exif.ascii(36881, "-05:00")
    ifd0.sub_ifd(34665, exif)
    gps = Ifd(">")
    gps.ascii(1, "S")
    gps.rational(2, [(33, 1), (51, 1), (5430, 100)])
    ifd0.sub_ifd(34853, gps)
    path = tmp_path / "be.nef"
    path.write_bytes(layout_tiff(ifd0).to_bytes())
    blob = build_exif(read_camera_metadata(path), "s", size=(8, 6))
    parsed = Image.Exif()
    parsed.load(b"Exif\0\0" + blob)
    sub, gps_read = parsed.get_ifd(0x8769), parsed.get_ifd(0x8825)
    assert sub[37510] == b"UNICODE\0" + COMMENT.encode("utf-16-le")
    assert (sub[36881], parsed[315], gps_read[1]) == ("-05:00", "Zoe Muller", "S")
    assert [float(v) for v in gps_read[2]] == [33.0, 51.0, 54.3]
    assert (sub[40962], sub[40963]) == (8, 6)


@pytest.mark.parametrize(
    ("stored", "written"),
    [
        (b"ASCII\0\0\0Hello\0", b"ASCII\0\0\0Hello"),
        (b"\0" * 8 + b"plain", b"ASCII\0\0\0plain"),
        (b"JIS\0\0\0\0\0\x1b$B", None),  # JIS is not carried
        (b"ASCII\0\0\0" + b"\0" * 10, None),  # empty
        (b"UNIC", None),  # shorter than its code
    ],
)
def test_user_comment_character_sets(tmp_path: Path, stored: bytes, written: bytes | None) -> None:
    ifd0 = Ifd()
    exif = Ifd()
    exif.undefined(37510, stored)
    ifd0.sub_ifd(34665, exif)
    path = tmp_path / "c.tif"
    path.write_bytes(layout_tiff(ifd0).to_bytes())
    parsed = Image.Exif()
    parsed.load(b"Exif\0\0" + build_exif(read_camera_metadata(path), "s"))
    assert parsed.get_ifd(0x8769).get(37510) == written


def test_wrong_types_and_counts_are_not_carried(tmp_path: Path) -> None:
    ifd0 = Ifd()
    ifd0.short(315, 7)  # Artist as a number
    exif = Ifd()
    exif.rational(42034, [(1, 1)] * 5)  # LensSpecification takes 4
    exif.short(41989, [35, 36])  # FocalLengthIn35mmFilm takes 1
    exif.ascii(42035, "Sigma")
    ifd0.sub_ifd(34665, exif)
    path = tmp_path / "w.tif"
    path.write_bytes(layout_tiff(ifd0).to_bytes())
    assert [(t.ifd, t.tag, t.value) for t in read_camera_metadata(path).tags] == [(EXIF, 42035, "Sigma")]


def test_exif_too_large_for_a_jpeg_keeps_the_named_fields(tmp_path: Path) -> None:
    """Carried tags past one JPEG segment (64 KiB) are left out; the named fields stay."""
    long_text = tuple(ExifTag(EXIF, 0xC000 + i, A, "z" * 4000) for i in range(20))
    meta = CameraMetadata(make="Sony", iso=800, tags=(ExifTag(IFD0, 315, A, "Jane"), *long_text))
    assert len(build_exif(meta, "s")) < 65000
    pixels = np.zeros((4, 6, 3), np.float32)
    out = write_image(tmp_path / "big.jpg", pixels, fmt="jpeg", bits=8, metadata=meta, software="")
    with Image.open(out) as im:
        ifd0 = im.getexif()
    assert ifd0[271] == "Sony" and ifd0.get_ifd(0x8769)[34855] == 800 and 315 not in ifd0
    small = CameraMetadata(make="Sony", tags=(ExifTag(IFD0, 315, A, "Jane"),))
    parsed = Image.Exif()
    parsed.load(b"Exif\0\0" + build_exif(small, "s"))
    assert parsed[315] == "Jane"  # the same tag is written when it fits


def test_carried_metadata_crosses_to_the_batch_decoder_process(tmp_path: Path, rng: np.random.Generator) -> None:
    """The batch decodes in a child process: the tags and the packet must survive pickling."""
    meta = read_camera_metadata(shot_dng(tmp_path / "p.dng", rng, xmp=xmp_packet(4, ["night"])))
    back = pickle.loads(pickle.dumps(meta))
    assert back == meta and back.tags == meta.tags and back.xmp == meta.xmp
    assert {(t.ifd, t.tag) for t in back.tags} >= {(IFD0, 315), (GPS, 2), (EXIF, 37510), (EXIF, 42033)}


def test_exif_tags_kept_in_ifd0_are_carried_too(tmp_path: Path) -> None:
    """Some DNG writers put Exif tags into IFD0 (TIFF/EP style); they go to the output's Exif IFD."""
    ifd0 = Ifd()
    ifd0.ascii(271, "Leica")
    ifd0.ascii(42035, "Leica Camera AG")  # LensMake
    ifd0.srational(37380, [(1, 3)])  # ExposureBiasValue
    path = tmp_path / "tiffep.dng"
    path.write_bytes(layout_tiff(ifd0).to_bytes())
    parsed = Image.Exif()
    parsed.load(b"Exif\0\0" + build_exif(read_camera_metadata(path), "s"))
    sub = parsed.get_ifd(0x8769)
    assert sub[42035] == "Leica Camera AG" and as_pairs(sub[37380]) == [(1, 3)]


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")
@pytest.mark.parametrize("ext", [".png", ".tif", ".jpg"])
def test_exiftool_reads_the_carried_metadata(tmp_path: Path, rng: np.random.Generator, ext: str) -> None:
    """A third reader, the one photographers use to check their files."""
    raw = shot_dng(tmp_path / "shot.dng", rng, xmp=xmp_packet(4, ["night", "Köln"]))
    out = enhance_file(raw, tmp_path / f"out{ext}", weights=WEIGHTS, ratio=50)
    said = subprocess.run(
        ["exiftool", "-j", "-n", "-a", "-G1", "-all", "-validate", "-warning", str(out)],
        capture_output=True,
        check=True,
        text=True,
    )
    tags = json.loads(said.stdout)[0]
    assert tags["IFD0:Orientation"] == 1 and tags["XMP-tiff:Orientation"] == 1
    assert (tags["IFD0:Artist"], tags["IFD0:Copyright"]) == ("Jane Doe", "(c) 2026 Jane Doe")
    assert tags["GPS:GPSLatitude"] == pytest.approx(50 + 56 / 60 + 29.1 / 3600)
    assert tags["GPS:GPSLongitude"] == pytest.approx(6 + 57 / 60 + 4 / 3600)
    assert (tags["GPS:GPSLatitudeRef"], tags["GPS:GPSAltitude"]) == ("N", 53)
    assert (tags["ExifIFD:OffsetTimeOriginal"], tags["ExifIFD:SubSecTimeOriginal"]) == ("+01:00", "042")
    assert tags["ExifIFD:UserComment"] == COMMENT and tags["ExifIFD:LensInfo"] == "35 35 2.8 2.8"
    assert (tags["XMP-xmp:Rating"], tags["XMP-dc:Subject"]) == (4, ["night", "Köln"])
    if ext != ".tif":  # exiftool holds TIFF's Adobe Deflate and a GPS IFD without ProcessingMethod against it
        assert tags["ExifTool:Validate"] == "0 0 0"  # errors, warnings, minor warnings
