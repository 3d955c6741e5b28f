"""XMP packets: found beside or inside a RAW file, cleaned for the image seedark writes.

A catalogue (Lightroom, darktable, Capture One...) keeps a photographer's rating,
keywords, title and rights in XMP, either inside the file (TIFF tag 700, which DNG,
CR2, NEF and others carry) or in a sidecar file next to it. The packet is copied into
every output, minus what describes the RAW rather than the picture:

- the development settings of Camera Raw (``crs:``) and darktable (``darktable:``):
  Lightroom and darktable would apply them a second time to the rendered image;
- the RAW's layout (``tiff:ImageWidth``, ``exif:PixelXDimension``, ``tiff:BitsPerSample``...,
  ``photoshop:SidecarForExtension``), which would contradict the output's;
- ``tiff:Orientation`` becomes 1: seedark writes the pixels upright.

Which packet: the sidecar named ``photo.ARW.xmp`` (darktable's name), else ``photo.xmp``
(Lightroom's and Capture One's), else the one embedded in the RAW. A sidecar wins as it
does in Lightroom, because that is where a catalogue writes its edits to a proprietary
RAW; the embedded packet is usually what the camera wrote at capture. Packets are
never merged.

The packet comes from a file anyone can write, so it must parse as XML without a DTD
(no entities, hence no entity expansion), be UTF-8 and hold an ``rdf:RDF``; anything
else is dropped. Metadata is optional: nothing here raises.
"""

from __future__ import annotations

import os
from pathlib import Path
from xml.dom import minidom
from xml.parsers.expat import ExpatError

#: Larger packets are not metadata a photographer wrote (Lightroom's are a few KiB).
MAX_XMP = 1 << 20

_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_TIFF = "http://ns.adobe.com/tiff/1.0/"
_EXIF = "http://ns.adobe.com/exif/1.0/"
_PHOTOSHOP = "http://ns.adobe.com/photoshop/1.0/"
#: Whole namespaces that describe how to develop the RAW.
_DROPPED_NAMESPACES = frozenset({"http://ns.adobe.com/camera-raw-settings/1.0/", "http://darktable.sf.net/"})
#: Properties that describe the RAW's layout, not the output's.
_DROPPED = frozenset(
    {
        (_TIFF, name)
        for name in (
            "ImageWidth",
            "ImageLength",
            "BitsPerSample",
            "Compression",
            "PhotometricInterpretation",
            "SamplesPerPixel",
            "PlanarConfiguration",
            "YCbCrSubSampling",
            "YCbCrPositioning",
            "XResolution",
            "YResolution",
            "ResolutionUnit",
        )
    }
    | {(_EXIF, "PixelXDimension"), (_EXIF, "PixelYDimension"), (_EXIF, "ColorSpace")}
    | {(_PHOTOSHOP, "SidecarForExtension"), (_PHOTOSHOP, "ICCProfile"), (_PHOTOSHOP, "ColorMode")}
)
_ORIENTATION = (_TIFF, "Orientation")

_HEADER = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_TRAILER = '\n<?xpacket end="w"?>'


def _dropped(node: minidom.Node) -> bool:
    ns = node.namespaceURI
    return ns in _DROPPED_NAMESPACES or (ns, node.localName) in _DROPPED


def _clean_description(doc: minidom.Document, desc: minidom.Element) -> None:
    for attr in list(desc.attributes.values()):
        if _dropped(attr):
            desc.removeAttributeNode(attr)
        elif (attr.namespaceURI, attr.localName) == _ORIENTATION:
            attr.value = "1"
    for child in list(desc.childNodes):
        if child.nodeType != child.ELEMENT_NODE:
            continue
        if _dropped(child):
            desc.removeChild(child)
        elif (child.namespaceURI, child.localName) == _ORIENTATION:
            for old in list(child.childNodes):
                child.removeChild(old)
            child.appendChild(doc.createTextNode("1"))


def clean_xmp(packet: bytes) -> bytes | None:
    """``packet`` made fit for a rendered, upright sRGB image (see the module), or None
    when it is not an XMP packet seedark will copy."""
    if not packet or len(packet) > MAX_XMP:
        return None
    try:
        text = packet.decode("utf-8-sig").rstrip("\0")
    except UnicodeDecodeError:
        return None
    # XMP forbids a DTD; without one there are no entities to expand or fetch.
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        return None
    try:
        doc = minidom.parseString(text.encode("utf-8"))
    except (ExpatError, ValueError):
        return None
    try:
        if not doc.getElementsByTagNameNS(_RDF, "RDF"):
            return None
        for desc in doc.getElementsByTagNameNS(_RDF, "Description"):
            _clean_description(doc, desc)
        root = doc.documentElement
        body = root.toxml() if root is not None else ""
    finally:
        doc.unlink()
    return (_HEADER + body + _TRAILER).encode("utf-8")


def sidecar_paths(raw: str | os.PathLike[str]) -> list[Path]:
    """Where a sidecar for ``raw`` may be, the preferred first (``photo.ARW.xmp``, ``photo.xmp``)."""
    p = Path(raw)
    found: list[Path] = []
    for candidate in (p.with_name(p.name + ".xmp"), p.with_name(p.name + ".XMP")):
        found.append(candidate)
    if p.suffix:
        found += [p.with_suffix(".xmp"), p.with_suffix(".XMP")]
    return list(dict.fromkeys(found))


def read_sidecar(raw: str | os.PathLike[str]) -> bytes | None:
    """The cleaned packet of the first usable sidecar of ``raw``, or None."""
    for candidate in sidecar_paths(raw):
        try:
            with open(candidate, "rb") as fh:
                if os.fstat(fh.fileno()).st_size > MAX_XMP:
                    continue
                data = fh.read(MAX_XMP + 1)
        except OSError:
            continue
        cleaned = clean_xmp(data)
        if cleaned is not None:
            return cleaned
    return None


def jpeg_segment(packet: bytes) -> bytes | None:
    """``packet`` as a JPEG APP1 XMP segment, or None when it exceeds one segment (64 KiB)."""
    payload = b"http://ns.adobe.com/xap/1.0/\0" + packet
    if len(payload) + 2 > 0xFFFF:
        return None
    return b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload


def png_chunk_data(packet: bytes) -> bytes:
    """The data of a PNG iTXt chunk holding ``packet`` (keyword ``XML:com.adobe.xmp``, uncompressed)."""
    return b"XML:com.adobe.xmp\0\0\0\0\0" + packet
