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
(no entities, hence no entity expansion), be UTF-8, hold an ``rdf:RDF`` and nest its
elements at most :data:`MAX_XMP_DEPTH` deep; anything else is dropped (a packet nested
too deep with a warning, as it is most likely hostile). Processing instructions inside
the packet (an ``<?xpacket?>`` trailer) are left out: the packet gets its own. A sidecar
is read only if it is a regular file. Metadata is optional: nothing here raises.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from xml.dom import minidom
from xml.parsers import expat
from xml.parsers.expat import ExpatError

from seedark._files import open_regular

log = logging.getLogger("seedark")

#: Larger packets are not metadata a photographer wrote (Lightroom's are a few KiB).
MAX_XMP = 1 << 20
#: Real packets nest a dozen elements at most (a structure in a list in a property); the DOM
#: code recurses once per level, so a packet nested hundreds deep would exhaust Python's stack.
MAX_XMP_DEPTH = 100

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


def _depth(data: bytes) -> int:
    """How deep the elements of the XML ``data`` nest, found without building anything (0: not XML)."""
    parser = expat.ParserCreate()
    depth = deepest = 0

    def start(name: str, attributes: object) -> None:
        nonlocal depth, deepest
        depth += 1
        deepest = max(deepest, depth)

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except (ExpatError, ValueError):
        return 0
    return deepest


def _drop_instructions(doc: minidom.Document) -> None:
    """Remove every processing instruction (walked without recursion: see :data:`MAX_XMP_DEPTH`)."""
    stack: list[minidom.Document | minidom.Element] = [doc]
    while stack:
        node = stack.pop()
        for child in list(node.childNodes):
            if child.nodeType == child.PROCESSING_INSTRUCTION_NODE:
                node.removeChild(child)
            elif isinstance(child, minidom.Element):
                stack.append(child)


def _too_deep(origin: object, deep: int) -> None:
    where = f"{origin}: " if origin is not None else ""
    log.warning("%sXMP packet left out: elements nested %d deep (at most %d)", where, deep, MAX_XMP_DEPTH)


def clean_xmp(packet: bytes, origin: object = None) -> bytes | None:
    """``packet`` made fit for a rendered, upright sRGB image (see the module), or None
    when it is not an XMP packet seedark will copy. ``origin``: the file it came from,
    for the warning about a packet nested too deep."""
    if not packet or len(packet) > MAX_XMP:
        return None
    try:
        text = packet.decode("utf-8-sig").rstrip("\0")
    except UnicodeDecodeError:
        return None
    # XMP forbids a DTD; without one there are no entities to expand or fetch.
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        return None
    data = text.encode("utf-8")
    deep = _depth(data)
    if deep > MAX_XMP_DEPTH:
        _too_deep(origin, deep)
        return None
    try:
        doc = minidom.parseString(data)
    except (ExpatError, ValueError):
        return None
    try:
        body = _cleaned_body(doc)
    except RecursionError:  # not expected below MAX_XMP_DEPTH; the packet goes, the metadata stays
        _too_deep(origin, deep)
        return None
    finally:
        with contextlib.suppress(RecursionError):
            doc.unlink()
    return None if body is None else (_HEADER + body + _TRAILER).encode("utf-8")


def _cleaned_body(doc: minidom.Document) -> str | None:
    """The packet's cleaned root element as text, or None when it holds no ``rdf:RDF``."""
    if not doc.getElementsByTagNameNS(_RDF, "RDF"):
        return None
    _drop_instructions(doc)
    for desc in doc.getElementsByTagNameNS(_RDF, "Description"):
        _clean_description(doc, desc)
    root = doc.documentElement
    return root.toxml() if root is not None else ""


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
    """The cleaned packet of the first usable sidecar of ``raw``, or None. Only a regular file
    counts: a FIFO named like a sidecar would block the read forever."""
    for candidate in sidecar_paths(raw):
        try:
            with open_regular(candidate) as fh:
                if os.fstat(fh.fileno()).st_size > MAX_XMP:
                    continue
                data = fh.read(MAX_XMP + 1)
        except OSError:
            continue
        cleaned = clean_xmp(data, candidate)
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
