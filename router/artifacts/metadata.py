"""A model directory's ``metadata.json``: read inside ``model_roots``, parsed and checked.

Nothing here imports scikit-learn or joblib, so a command that only needs what the metadata
says (the features, for ``router skew``; the listing of ``router models list``) starts fast.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from router.artifacts.files import METADATA_FILE, MODEL_FILES
from router.artifacts.roots import OutsideRootsError, confine
from router.errors import ModelLoadError, UntrustedModelError

__all__ = ["METADATA_KEYS", "check_inside_roots", "model_file_name", "read_file",
           "read_metadata"]

METADATA_KEYS: tuple[str, ...] = (
    "name",
    "version",
    "created_at",
    "task",
    "model_type",
    "features",
    "classes",
    "metrics",
    "reference",
    "sha256",
    "library_versions",
)


def model_file_name(metadata: dict[str, Any], metadata_path: Path) -> str:
    """The model file metadata.json names through its ``format`` (joblib when absent)."""
    fmt = metadata.get("format", "joblib")
    if fmt not in MODEL_FILES:
        raise ModelLoadError(f"{metadata_path}: key 'format' must be one of "
                             f"{', '.join(MODEL_FILES)}, got {fmt!r}")
    return MODEL_FILES[fmt]


def check_inside_roots(path: Path, roots: Sequence[Path]) -> None:
    """:class:`UntrustedModelError` unless ``path`` resolves inside one of ``roots`` (if any)."""
    try:
        confine(path, roots)
    except OutsideRootsError as exc:
        raise UntrustedModelError(str(exc), [{"path": str(path), "problem": "outside_roots"}]
                                  ) from None


def read_file(path: Path, roots: Sequence[Path]) -> bytes:
    """A file of a model directory, refused outside ``roots``; a fault as ModelLoadError."""
    check_inside_roots(path, roots)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: missing") from None
    except OSError as exc:
        raise ModelLoadError(f"{path}: unreadable ({exc.strerror or exc})") from None


def _check_metadata(metadata: Any, metadata_path: Path) -> dict[str, Any]:
    if not isinstance(metadata, dict):
        raise ModelLoadError(f"{metadata_path}: expected a JSON object")
    missing = [key for key in METADATA_KEYS if key not in metadata]
    if missing:
        raise ModelLoadError(f"{metadata_path}: missing keys {', '.join(missing)}")

    def bad(key: str, why: str) -> ModelLoadError:
        return ModelLoadError(f"{metadata_path}: key {key!r} {why}")

    if metadata["task"] not in ("classification", "regression"):
        raise bad("task", "must be 'classification' or 'regression'")
    features = metadata["features"]
    if (
        not isinstance(features, list)
        or not features
        or not all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in features)
    ):
        raise bad("features", "must be a non-empty list of objects with a string 'name'")
    digest = metadata["sha256"]
    if not isinstance(digest, str) or len(digest) != 64:
        raise bad("sha256", "must be a 64-character hex digest")
    if metadata["task"] == "classification" and not isinstance(metadata["classes"], list):
        raise bad("classes", "must list the class labels of a classifier")
    for key in ("reference", "library_versions"):
        if not isinstance(metadata[key], dict):
            raise bad(key, "must be an object")
    sample = metadata["reference"].get("sample")
    if sample is not None and (not isinstance(sample, dict)
                               or not {"file", "sha256"} <= sample.keys()):
        raise bad("reference", "has a 'sample' without 'file' and 'sha256'")
    return metadata


def read_metadata(directory: Path, roots: Sequence[Path] = ()) -> tuple[dict[str, Any], bytes]:
    """``metadata.json`` of ``directory``, parsed and checked, with the bytes it was parsed from."""
    if not directory.exists():
        raise ModelLoadError(f"{directory}: model directory does not exist")
    if not directory.is_dir():
        raise ModelLoadError(f"{directory}: not a directory")
    metadata_path = directory / METADATA_FILE
    if not metadata_path.exists() and not metadata_path.is_symlink():
        raise ModelLoadError(f"{metadata_path}: missing; not a model directory")
    raw = read_file(metadata_path, roots)
    try:
        metadata = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelLoadError(f"{metadata_path}: unreadable or not JSON ({exc})") from None
    return _check_metadata(metadata, metadata_path), raw
