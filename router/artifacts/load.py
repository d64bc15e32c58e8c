"""load_model: a model directory checked in a fixed order, then deserialised.

The order: the directory (and each file) inside ``model_roots``; ``metadata.json`` complete;
the signature, when a public key is required; each file's bytes against the digest the metadata
records; only then deserialising those same bytes. So nothing that changed, came from outside
the roots or lacks a good signature is ever unpickled.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.artifacts.estimators import native_list
from router.artifacts.files import METADATA_FILE
from router.artifacts.formats import read_model
from router.artifacts.metadata import (
    METADATA_KEYS,
    check_inside_roots,
    model_file_name,
    read_file,
    read_metadata,
)
from router.artifacts.versions import (
    LibraryVersionWarning,
    collect_version_warnings,
    version_problems,
)
from router.errors import DigestMismatchError, ModelLoadError

__all__ = ["METADATA_KEYS", "ModelArtifact", "VerifiedFiles", "check_inside_roots", "load_model",
           "model_file_name", "read_metadata", "read_verified"]


@dataclass(frozen=True)
class ModelArtifact:
    """A verified model directory: the deserialised ``model``, its ``metadata`` and ``path``.

    ``reference_sample`` is the float64 array of ``reference_sample.npy`` (digest checked), or
    ``None`` for a directory saved without one.
    """

    model: Any
    metadata: dict[str, Any]
    path: Path
    reference_sample: np.ndarray | None = None

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    @property
    def sha256(self) -> str:
        return str(self.metadata["sha256"])

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f["name"] for f in self.metadata["features"])


@dataclass(frozen=True)
class VerifiedFiles:
    """The bytes of a model directory's files, each checked against its recorded digest."""

    metadata: dict[str, Any]
    model_file: str
    model_bytes: bytes
    sample_bytes: bytes | None
    digests: dict[str, str]  # file name -> sha256: what a signature covers


def _verified(path: Path, data: bytes, expected: str) -> bytes:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise DigestMismatchError(
            f"{path}: digest mismatch: expected sha256 {expected} (from {METADATA_FILE}), "
            f"actual {actual}; refusing to load a file that changed after it was saved",
            [{"file": str(path), "expected": expected, "actual": actual}],
        )
    return data


def read_verified(directory: Path, *, model_roots: Sequence[Path] = (),
                  public_key: Any = None) -> VerifiedFiles:
    """Every file of ``directory`` the loader uses, as bytes checked against their digests.

    With ``public_key``, ``signature.json`` must sign those digests (checked before the model
    and sample files are even read). Nothing is deserialised here.
    """
    check_inside_roots(directory, model_roots)
    metadata, raw = read_metadata(directory, model_roots)
    metadata_path = directory / METADATA_FILE
    model_file = model_file_name(metadata, metadata_path)
    digests = {METADATA_FILE: hashlib.sha256(raw).hexdigest(), model_file: metadata["sha256"]}
    sample = metadata["reference"].get("sample")
    if sample is not None:
        digests[str(sample["file"])] = str(sample["sha256"])
    if public_key is not None:
        from router.artifacts.signing import verify_signature

        verify_signature(directory, digests, public_key)
    model_bytes = _verified(directory / model_file,
                            read_file(directory / model_file, model_roots), metadata["sha256"])
    sample_bytes = None
    if sample is not None:
        sample_path = directory / str(sample["file"])
        sample_bytes = _verified(sample_path, read_file(sample_path, model_roots),
                                 str(sample["sha256"]))
    return VerifiedFiles(metadata=metadata, model_file=model_file, model_bytes=model_bytes,
                         sample_bytes=sample_bytes, digests=digests)


def _reference_sample(directory: Path, files: VerifiedFiles) -> np.ndarray | None:
    if files.sample_bytes is None:
        return None
    path = directory / str(files.metadata["reference"]["sample"]["file"])
    try:
        sample = np.load(io.BytesIO(files.sample_bytes), allow_pickle=False)
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a numpy array file ({exc})") from None
    n_features = len(files.metadata["features"])
    if sample.ndim != 2 or sample.shape[1] != n_features:
        raise ModelLoadError(f"{path}: shape {sample.shape} does not match {n_features} features")
    return sample.astype(np.float64, copy=False)


def load_model(directory: str | Path, *, trusted_types: Iterable[str] = (),
               public_key: Any = None, model_roots: Sequence[str | Path] = ()
               ) -> ModelArtifact:
    """Verify and load a model directory written by :func:`save_model`.

    Arguments:
        directory: the model directory (``model.joblib`` or ``model.skops``, ``metadata.json``).
        trusted_types: for a skops file, types to build beyond skops' defaults and
            :data:`~router.artifacts.formats.SKOPS_TRUSTED_TYPES`; a file that needs any other
            type is refused, naming them.
        public_key: an Ed25519 public key (or the path of its PEM file): the directory must
            then carry a ``signature.json`` made with its private key (``router sign``).
        model_roots: directories the model directory, and every file read from it, must
            resolve inside (symlinks and ``..`` followed first).

    Every failure raises :class:`~router.errors.ModelLoadError` (a
    :class:`~router.errors.DigestMismatchError` for a changed file, an
    :class:`~router.errors.UntrustedModelError` for a path outside the roots or a missing or
    wrong signature) whose message names the path; the deserialiser's own traceback is not
    chained. A scikit-learn, numpy or joblib major.minor that differs from the one recorded (or
    an sklearn ``InconsistentVersionWarning``) gives one :class:`LibraryVersionWarning`.
    """
    path = Path(directory)
    roots = [Path(r) for r in model_roots]
    if isinstance(public_key, str | Path):
        from router.artifacts.signing import load_public_key

        public_key = load_public_key(public_key)
    files = read_verified(path, model_roots=roots, public_key=public_key)
    metadata = files.metadata
    reference_sample = _reference_sample(path, files)
    model_path = path / files.model_file
    fmt = metadata.get("format", "joblib")

    try:
        with collect_version_warnings() as sklearn_notes:
            model = read_model(files.model_bytes, fmt, model_path, trusted_types)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"{model_path}: cannot {'unpickle' if fmt == 'joblib' else 'load'} the model "
            f"({type(exc).__name__}: {exc})"
        ) from None
    if not callable(getattr(model, "predict", None)):
        raise ModelLoadError(f"{model_path}: holds a {type(model).__name__}, not a model")

    problems = version_problems(metadata, sklearn_notes)
    if problems:
        warnings.warn(
            f"{path}: model saved with other library versions ({'; '.join(problems)}); "
            "its predictions may differ or fail. Re-save it with the current versions.",
            LibraryVersionWarning,
            stacklevel=2,
        )

    if metadata["task"] == "classification":
        model_classes = getattr(model, "classes_", None)
        if model_classes is not None and native_list(model_classes) != metadata["classes"]:
            raise ModelLoadError(
                f"{path / METADATA_FILE}: classes {metadata['classes']} differ from the "
                f"model's {native_list(model_classes)}"
            )
    return ModelArtifact(
        model=model, metadata=metadata, path=path, reference_sample=reference_sample
    )
