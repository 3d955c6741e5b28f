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

import math
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
    #: How the camera the network was trained on records colours: XYZ (D65) -> camera RGB,
    #: 9 values row-major, in the Adobe DNG convention (seedark.io.colormatrix); None if unknown.
    color_matrix: tuple[float, ...] | None = None
    color_matrix_source: str = ""

    @property
    def camera(self) -> ModelCamera | None:
        """The camera the network was trained on, for matching other sensors to it (docs/cameras.md)."""
        if self.color_matrix is None:
            return None
        return ModelCamera(self.sensor.split(" (")[0], self.color_matrix, self.color_matrix_source)

    #: The amplification ratios the network was trained on (the SID sets' x100, x250 and x300);
    #: outside them it extrapolates, and ``enhance`` warns (docs/exposure.md).
    ratios: tuple[float, float] = (100.0, 300.0)

    @property
    def download_size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)


@dataclass(frozen=True)
class ModelCamera:
    """The camera a model's training data came from: its name and colour matrix (XYZ D65 -> camera)."""

    name: str
    matrix: tuple[float, ...]  # 9 values, row-major
    source: str  # where the matrix was published


#: Metadata keys of a weights file that name its camera (seedark's safetensors header):
#: the camera's name and its XYZ (D65) -> camera matrix as 9 comma-separated numbers.
CAMERA_KEY = "camera"
CAMERA_MATRIX_KEY = "camera_matrix"
#: The cache's weights name the registry model they were converted from (seedark.models.cache).
MODEL_KEY = "seedark_model"


def camera_metadata(camera: ModelCamera) -> dict[str, str]:
    """The metadata that makes a weights file name ``camera`` (:func:`model_camera` reads it back)."""
    return {
        CAMERA_KEY: camera.name,
        CAMERA_MATRIX_KEY: ",".join(repr(float(v)) for v in camera.matrix),
    }


def model_camera(metadata: Mapping[str, str]) -> ModelCamera | None:
    """The camera a network was trained on, from its weights' metadata: an explicit
    ``camera_matrix``, else the registry entry of the model the cache converted it from;
    None when neither says (the weights' camera is then unknown)."""
    text = metadata.get(CAMERA_MATRIX_KEY)
    if text is not None:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            return None
        if len(values) != 9 or not all(math.isfinite(v) for v in values):
            return None
        return ModelCamera(metadata.get(CAMERA_KEY) or "the weights' camera", values, "the weights file's metadata")
    record = MODELS.get(metadata.get(MODEL_KEY, ""))
    return record.camera if record is not None else None


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
            # Adobe's D65 matrix of the ILCE-7S / ILCE-7SM2 (Adobe DNG Converter), as LibRaw's
            # colour table (src/tables/colordata.cpp, "ILCE-7S") and dcraw's adobe_coeff give it.
            color_matrix=(0.5838, -0.1430, -0.0246, -0.3497, 1.1477, 0.2297, -0.0748, 0.1885, 0.5778),
            color_matrix_source="Adobe DNG Converter, via LibRaw's colour table (ILCE-7S, ILCE-7SM2)",
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
            # LibRaw's colour table (src/tables/colordata.cpp, "X-T2": the same for the X-T20),
            # Adobe DNG Converter's D65 matrix.
            color_matrix=(1.1434, -0.4948, -0.1210, -0.3746, 1.2042, 0.1903, -0.0666, 0.1479, 0.5235),
            color_matrix_source="Adobe DNG Converter, via LibRaw's colour table (X-T2, X-T20)",
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


def trained_ratios(name: str | None) -> tuple[float, float] | None:
    """The ratios registry model ``name`` was trained on; None for weights it does not know."""
    record = MODELS.get(name) if name is not None else None
    return record.ratios if record is not None else None


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
    "ModelCamera",
    "ModelRecord",
    "SourceFile",
    "camera_metadata",
    "default_model_for",
    "drive_urls",
    "drive_view_url",
    "get_record",
    "model_camera",
    "trained_ratios",
]
