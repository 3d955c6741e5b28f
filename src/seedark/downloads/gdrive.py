"""Google Drive: a large file comes behind a "can't scan this file for viruses" page, which is followed.

Drive answers a download URL for a file too large to scan with a web page instead of the
data; its form (or, on older pages, a link or a ``download_warning`` cookie) carries the
token that fetches the file. Any other page (quota exceeded, access denied) is refused
as :class:`~seedark.downloads.http.HTTPDownloader` refuses every page.
"""

from __future__ import annotations

import logging
from html import unescape
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import requests
from requests.cookies import RequestsCookieJar

from seedark.downloads.http import HTTPDownloader, parse_page
from seedark.downloads.job import Job

log = logging.getLogger("seedark")

#: Confirmation pages followed per source before giving up (Drive needs one).
MAX_CONFIRM_HOPS = 3
#: The hosts Drive serves files from (``docs.google.com``: older share links).
HOSTS = ("drive.google.com", "drive.usercontent.google.com", "docs.google.com")


class GoogleDriveDownloader(HTTPDownloader):
    """Plain HTTP, plus Drive's download confirmation page."""

    def next_url(self, job: Job, resp: requests.Response, page: str, hops: int) -> str | None:
        confirm = drive_confirmation_url(page, resp.url, resp.cookies)
        if confirm is None or hops >= MAX_CONFIRM_HOPS:
            return None
        log.info("following Google Drive's download confirmation for %s", job.part.name)
        return confirm


def drive_confirmation_url(page: str, page_url: str, cookies: RequestsCookieJar | None = None) -> str | None:
    """The URL behind Google Drive's "can't scan for viruses" page, or None if this isn't one.

    Current Drive pages hold a form (``action`` = drive.usercontent.google.com/download)
    with hidden inputs id, export, confirm and uuid; older ones a link carrying
    ``confirm=`` or a ``download_warning`` cookie holding the token. Quota and
    permission pages have none of these, so they are not followed.
    """
    parsed = parse_page(page)
    for action, _attrs, inputs in parsed.forms:
        if "confirm" in inputs and ("id" in inputs or "download" in action):
            base = urljoin(page_url, unescape(action)) if action else page_url
            parts = urlsplit(base)
            query = urlencode(inputs)
            if parts.query:
                query = f"{parts.query}&{query}"
            return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
    for href in parsed.links:
        return urljoin(page_url, unescape(href))
    if cookies is not None:
        for name, value in cookies.items():
            if name.startswith("download_warning") and value:
                sep = "&" if urlsplit(page_url).query else "?"
                return f"{page_url}{sep}confirm={value}"
    return None
