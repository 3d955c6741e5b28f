"""Downloading one file from its sources: streamed, resumed, retried, paced, verified, published.

:func:`seedark.downloads.fetch.fetch` is the entry point (the guarantees are in its module).
Each source URL is handed to the downloader :func:`seedark.downloads.choose.choose_downloader`
picks for it: plain HTTP(S) (:mod:`seedark.downloads.http`) or Google Drive, whose large files
come behind a confirmation page (:mod:`seedark.downloads.gdrive`). The shared state of one
transfer and what an attempt can report live in :mod:`seedark.downloads.job`.
"""
