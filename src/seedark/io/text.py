"""Text that came from a file, made safe for where it goes next.

Whoever made a RAW file chose its strings (Make, Model, lens, dates...) and its name.
Shown as they are, control characters and escape sequences drive the user's terminal
(clear it, set its title, forge output lines); copied into an output's EXIF, anything
beyond 7-bit ASCII breaks the rule of TIFF's ASCII type. Both functions here share one
definition of a control character:

- :func:`clean_text` for strings read from a file's contents: escape sequences and
  controls removed, line breaks turned into spaces; ``ascii=True`` also makes it 7-bit.
  The metadata reader applies it, so every consumer gets clean text; the TIFF writer
  applies the 7-bit form to every ASCII tag.
- :func:`printable` for file names and messages shown to a person: nothing is removed
  (the user must recognise the file), controls and bytes that are not UTF-8 are written
  as ``\\xNN`` escapes instead.
"""

from __future__ import annotations

import re
import unicodedata

# ECMA-48 sequences, so that their parameters go too (not just the ESC): CSI (ESC [ or
# C1 0x9B) with parameters, intermediates and a final byte; the string commands OSC, DCS,
# SOS, PM and APC up to BEL or ST (ESC \ or C1 0x9C), or to the end when unterminated;
# any other ESC with intermediates and a final byte.
_ESCAPE = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"
)

#: Unicode categories that are not text to show: C0/C1 controls (Cc), invisible format
#: characters such as bidi overrides that reorder what is displayed (Cf), lone surrogates
#: (Cs), and line/paragraph separators (Zl, Zp).
_CONTROL = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: Those that separate words: they become a space rather than glue two words together.
_BREAKS = frozenset({"Cc", "Zl", "Zp"})

# os.fsdecode keeps a byte that is not UTF-8 as a lone surrogate U+DC80..U+DCFF.
_ESCAPED_BYTE = range(0xDC80, 0xDD00)


def clean_text(text: str, *, ascii: bool = False) -> str:
    """A file's string without escape sequences or controls, on one line, trimmed.

    ``ascii``: also 7-bit, for EXIF/TIFF ASCII tags: accents are dropped from letters
    (``é`` becomes ``e``) and any other non-ASCII character becomes ``?``.
    """
    if not text.isprintable():
        text = _ESCAPE.sub("", text)
        text = "".join(_clean_char(ch) for ch in text)
    text = " ".join(text.split())
    if ascii and not text.isascii():
        decomposed = unicodedata.normalize("NFKD", text)
        kept = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
        text = "".join(ch if ch.isascii() else "?" for ch in kept)
    return text


def _clean_char(ch: str) -> str:
    category = unicodedata.category(ch)
    if category not in _CONTROL:
        return ch
    return " " if category in _BREAKS else ""


def printable(text: str) -> str:
    """``text`` (a file name, a message naming one) safe to print: controls and bytes
    that are not UTF-8 shown as escapes, everything else unchanged.

    Where the CLI prints a path or an error, it passes the text through this, so a
    hostile or merely non-UTF-8 file name neither drives the terminal nor fails to encode.
    """
    if text.isprintable():
        return text
    return "".join(_escape_char(ch) for ch in text)


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code in _ESCAPED_BYTE:
        return f"\\x{code - 0xDC00:02x}"
    if unicodedata.category(ch) not in _CONTROL:
        return ch
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
