"""Your own models: the table of models ``seedark finetune`` made, each for one camera.

The registry (seedark.models.registry) is the read-only table of the official
models; the models you train for your camera live beside them in the model cache
(``models/<name>/``, weights and provenance, as an imported model does) and are
listed in a table file there, ``models/user-models.json``, read whenever a model is
looked up, so ``enhance`` and ``batch`` pick a camera's own model for its files. One
record (:class:`UserModel`) per model: its camera (make and model as the files name
them), its base model, the noise profile it was trained with and a summary of the run.

This module reads and writes the table file only; seedark.models.cache installs the
weights and offers the lookups (``user_model_for``, ``register_user_model``).

A camera is known by :func:`camera_key` (make and model, case and spacing ignored);
:func:`camera_slug` makes a file or model name of it (``nikon-d850``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from seedark._files import write_json

log = logging.getLogger("seedark")

TABLE_NAME = "user-models.json"
TABLE_VERSION = 1


def _words(text: str | None) -> list[str]:
    return (text or "").casefold().split()


def camera_key(make: str | None, model: str | None) -> str:
    """What identifies a camera: its make and model, case and spacing ignored."""
    return " ".join(_words(make)) + "|" + " ".join(_words(model))


def camera_slug(make: str | None, model: str | None) -> str:
    """A name for the camera made of lower-case letters, digits and '-' (at most 64), as a file or
    model name: the model alone when it starts with the make's first word (``NIKON CORPORATION``,
    ``NIKON D850``: ``nikon-d850``), else the make's first word and the model (``sony-ilce-7sm2``)."""
    make_words, model_words = _words(make), _words(model)
    words = model_words if make_words[:1] and model_words[:1] == make_words[:1] else make_words[:1] + model_words
    slug = re.sub(r"[^a-z0-9]+", "-", " ".join(words)).strip("-")
    return slug[:64].strip("-") or "camera"


def camera_label(make: str | None, model: str | None) -> str:
    """The camera as its make and model name it, for people: the model alone where it starts with
    the make's first word ("Canon", "Canon EOS R6": "Canon EOS R6"; "NIKON CORPORATION", "NIKON
    D850": "NIKON D850"), else both ("Sony ILCE-7SM2"); "this camera" when neither is known."""
    first = (make or "").split()[:1]
    if first and model and model.casefold().startswith(first[0].casefold()):
        return model
    return " ".join(x for x in (make, model) if x) or "this camera"


@dataclass(frozen=True)
class UserModel:
    """One model of the table: what ``seedark models list`` shows of it, and how it is found."""

    name: str
    make: str  # the camera, as its files name it
    model: str
    packing: str  # "bayer" or "xtrans"
    base: str  # the model it was fine-tuned from
    profile: str  # the noise profile it was trained with (a path)
    created: str  # UTC, ISO 8601
    summary: dict[str, Any] = field(default_factory=dict)  # steps, photos, pairs, seconds, loss

    @property
    def camera(self) -> str:
        return camera_label(self.make, self.model)

    @property
    def key(self) -> str:
        return camera_key(self.make, self.model)

    @classmethod
    def from_dict(cls, data: Any) -> UserModel | None:
        """A record from the table, None when it is not one (a damaged or hand-edited table)."""
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not names - {"summary"} <= set(data):
            return None
        if not all(isinstance(data[n], str) for n in names - {"summary"}):
            return None
        summary = data.get("summary", {})
        return cls(**{n: data[n] for n in names - {"summary"}}, summary=summary if isinstance(summary, dict) else {})


def read_table(path: Path) -> list[UserModel]:
    """The records of the table file at ``path``, oldest first; none when it is missing. A table
    that cannot be read is reported once in the log and counts as empty: looking up a camera's
    model must never stop a conversion."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("%s: the table of your models is unreadable (%s); it is ignored", path, exc)
        return []
    entries = data.get("models") if isinstance(data, dict) else None
    records = [UserModel.from_dict(e) for e in entries] if isinstance(entries, list) else []
    return [r for r in records if r is not None]


def write_table(path: Path, records: list[UserModel]) -> Path:
    """Write the table atomically (call it holding the table's lock)."""
    return write_json(path, {"table_version": TABLE_VERSION, "models": [asdict(r) for r in records]})


def for_camera(records: list[UserModel], make: str | None, model: str | None, packing: str) -> UserModel | None:
    """The newest record made for this camera and packing, or None."""
    key = camera_key(make, model)
    if key == "|":
        return None
    found = [r for r in records if r.key == key and r.packing == packing]
    return max(found, key=lambda r: r.created) if found else None


__all__ = [
    "TABLE_NAME",
    "UserModel",
    "camera_key",
    "camera_label",
    "camera_slug",
    "for_camera",
    "read_table",
    "write_table",
]
