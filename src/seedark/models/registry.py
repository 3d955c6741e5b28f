"""The pretrained models seedark knows, as data.

Each :class:`ModelRecord` lists the files of one official checkpoint and the facts
that make them trustworthy. Trust is a chain: the ``.index`` file's sha256 is
pinned here, and the index records a CRC32C for every tensor, so a data file
that passes :func:`seedark.models.tfcheckpoint.verify_data_file` against a pinned index
is the authors' file even though the 87 MB data file itself is not hashed here
(its length is pinned as a cheap early check).

Where the files come from (mirrors) is :mod:`seedark.models.official`'s business, where
they are kept :mod:`seedark.models.cache`'s; this module only describes the official release.

The table is read-only, its records frozen: nothing changes what a model name means while
seedark runs. A test that needs another model replaces :data:`MODELS` as a whole
(``monkeypatch.setattr(registry, "MODELS", MappingProxyType({...}))``), and the modules
that use it read ``registry.MODELS`` when called.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from seedark.errors import UnsupportedSensorError, UsageError

OFFICIAL_REPO = "https://github.com/cchen156/Learning-to-See-in-the-Dark"
_RAW = "https://raw.githubusercontent.com/cchen156/Learning-to-See-in-the-Dark/master"

INDEX_NAME = "model.ckpt.index"
DATA_NAME = "model.ckpt.data-00000-of-00001"


@dataclass(frozen=True)
class SourceFile:
    """One file of a model as published: its official name, where to get it, what it must be."""

    name: str
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None
    gdrive_id: str | None = None


@dataclass(frozen=True)
class ModelRecord:
    """A pretrained network: what it is for and the files it is built from."""

    name: str
    description: str
    licence: str
    packing: str  # "bayer" or "xtrans": the network's input layout
    sensor: str
    files: tuple[SourceFile, ...]
    homepage: str

    @property
    def download_size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)


def drive_urls(file_id: str) -> tuple[str, ...]:
    """Google Drive's public download URL, then its direct form as a fallback.

    The first may answer with a "can't scan for viruses" page that the
    downloader follows; the second already carries the confirmation.
    """
    return (
        f"https://drive.google.com/uc?export=download&id={file_id}",
        f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t",
    )


def drive_view_url(file_id: str) -> str:
    """The page a person opens in a browser to download a Drive file by hand."""
    return f"https://drive.google.com/file/d/{file_id}/view"


def _official(camera: str, index_sha256: str, index_size: int, data_size: int, drive_id: str) -> tuple[SourceFile, ...]:
    return (
        SourceFile(INDEX_NAME, (f"{_RAW}/checkpoint/{camera}/{INDEX_NAME}",), index_sha256, index_size),
        SourceFile(DATA_NAME, drive_urls(drive_id), None, data_size, gdrive_id=drive_id),
    )


MODELS: Mapping[str, ModelRecord] = MappingProxyType(
    {
        "sony": ModelRecord(
            name="sony",
            description="Official SID model for Sony Bayer RAW files (trained on the SID Sony a7S II set)",
            licence="MIT",
            packing="bayer",
            sensor="Sony a7S II (Bayer)",
            files=_official(
                "Sony",
                "56ec48578a4890933f98287872568f90aaa0d4a6e38fc1e78b21dc760e3af424",
                4602,
                87_552_664,
                "1wmx7AM6XWHjHIvpErmIouQgbQoMxAymG",
            ),
            homepage=OFFICIAL_REPO,
        ),
        "fuji": ModelRecord(
            name="fuji",
            description="Official SID model for Fujifilm X-Trans RAW files (trained on the SID Fuji X-T2 set)",
            licence="MIT",
            packing="xtrans",
            sensor="Fujifilm X-T2 (X-Trans)",
            files=_official(
                "Fuji",
                "ff1343bf295b37700dcfe583fcb02af0529d90cada194533abfcb966b470bd31",
                4602,
                87_575_884,
                "1PX5wA89d-JLmwQHqpBnyTYJxDVzC1gpt",
            ),
            homepage=OFFICIAL_REPO,
        ),
    }
)

DEFAULT_MODEL = "sony"


def get_record(name: str) -> ModelRecord:
    """The registry entry called ``name``; UsageError listing the known names otherwise.

    Imported models are not registry entries; :mod:`seedark.models.cache` looks those up
    in the cache before falling back to this.
    """
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise UsageError(f"unknown model {name!r}; known models: {known}") from None


def default_model_for(sensor: str) -> str:
    """The registry's model for a sensor kind: sony for Bayer, fuji for X-Trans."""
    for record in MODELS.values():
        if record.packing == sensor:
            return record.name
    raise UnsupportedSensorError(f"no model for {sensor} sensors is registered")


__all__ = [
    "DATA_NAME",
    "DEFAULT_MODEL",
    "INDEX_NAME",
    "MODELS",
    "ModelRecord",
    "SourceFile",
    "default_model_for",
    "drive_urls",
    "drive_view_url",
    "get_record",
]
