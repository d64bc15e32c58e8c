"""list_models: every model directory under a root, checked without deserialising anything."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from router.artifacts.files import METADATA_FILE, MODEL_FILES, file_sha256
from router.artifacts.metadata import model_file_name, read_metadata
from router.errors import ModelLoadError

__all__ = ["list_models"]


def _version_order(version: str) -> tuple[int, int, str]:
    # Numeric versions in numeric order (2 before 10), any others after them by text.
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def _describe(directory: Path) -> dict[str, Any]:
    row: dict[str, Any] = {
        "path": directory,
        "name": directory.parent.name,
        "version": directory.name,
        "task": "?",
        "model_type": "?",
        "created_at": "?",
        "sha256": "?",
    }
    try:
        metadata, _ = read_metadata(directory)
        model_file = model_file_name(metadata, directory / METADATA_FILE)
    except ModelLoadError as exc:
        return {**row, "status": f"invalid metadata ({exc.message})"}
    row.update({key: str(metadata[key]) for key in row if key != "path" and key in metadata})
    try:
        actual = file_sha256(directory / model_file)
    except OSError:
        return {**row, "status": f"{model_file} missing or unreadable"}
    if actual != metadata["sha256"]:
        return {**row, "status": "digest mismatch"}
    return {**row, "status": "ok"}


def list_models(root: str | Path) -> list[dict[str, Any]]:
    """Every model directory at or under ``root``, sorted by name then version.

    A model directory is one holding ``metadata.json`` or a model file; hidden directories
    and ``__pycache__`` are skipped. Each row has ``path``, ``name``, ``version``, ``task``,
    ``model_type``, ``created_at``, ``sha256`` (``"?"`` where unknown) and ``status``: ``"ok"``
    when the metadata is complete and the model file matches its digest, else what is wrong.
    Nothing is deserialised, so listing is cheap and safe.
    """
    rows = []
    markers = {METADATA_FILE, *MODEL_FILES.values()}
    for current, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(
            d for d in subdirectories if not d.startswith(".") and d != "__pycache__"
        )
        if markers & set(files):
            rows.append(_describe(Path(current)))
    return sorted(rows, key=lambda r: (r["name"], _version_order(r["version"])))
