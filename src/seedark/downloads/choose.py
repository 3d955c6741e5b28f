"""Which downloader fetches a URL: looked up by the URL's host, then by its scheme.

:data:`DOWNLOADERS` is read-only. A caller with a downloader of its own (another site
whose files come behind a page, a local server standing in for Drive) extends it in a
new mapping passed to :func:`seedark.downloads.fetch.fetch` (``downloaders=``), as in
``{**DOWNLOADERS, "files.example.org": MyDownloader()}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import urlsplit

from seedark.downloads import gdrive
from seedark.downloads.http import HTTPDownloader
from seedark.downloads.job import Downloader

_HTTP = HTTPDownloader()
_DRIVE = gdrive.GoogleDriveDownloader()

#: Keys are host names (lower case), looked up first, and URL schemes.
DOWNLOADERS: Mapping[str, Downloader] = MappingProxyType(
    {"http": _HTTP, "https": _HTTP, **dict.fromkeys(gdrive.HOSTS, _DRIVE)}
)


def choose_downloader(url: str, downloaders: Mapping[str, Downloader] | None = None) -> Downloader:
    """The downloader for ``url`` in ``downloaders`` (default :data:`DOWNLOADERS`): by host, then by scheme.

    Anything else (no scheme, an unknown one, a malformed URL) goes to plain HTTP, which
    refuses it with what is wrong with it.
    """
    table = DOWNLOADERS if downloaders is None else downloaders
    try:
        parts = urlsplit(url)
        keys = (parts.hostname or "", parts.scheme.lower())
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return _HTTP
    for key in keys:
        if key and key in table:
            return table[key]
    return _HTTP
