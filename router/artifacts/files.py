"""The file names of a model directory, and the two ways its files are touched: hashed, written.

Writes go through a temp file in the same directory, fsync and rename, so a reader never sees
half a file; digests are read in chunks, so a large model costs no more memory than a small one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "METADATA_FILE",
    "MODEL_FILE",
    "MODEL_FILES",
    "REFERENCE_SAMPLE_FILE",
    "SIGNATURE_FILE",
    "SKOPS_FILE",
    "atomic_write",
    "file_sha256",
]

MODEL_FILE = "model.joblib"
SKOPS_FILE = "model.skops"
METADATA_FILE = "metadata.json"
REFERENCE_SAMPLE_FILE = "reference_sample.npy"
SIGNATURE_FILE = "signature.json"

# The model file of each format metadata.json may name; a directory saved before formats
# existed has no "format" key and is joblib.
MODEL_FILES = {"joblib": MODEL_FILE, "skops": SKOPS_FILE}


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> str:
    """Write ``path`` through a temp file in the same directory, fsync, rename; return sha256."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        digest = file_sha256(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return digest
