"""save_model: a fitted pipeline and what the router learns from its training data, on disk."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from router.artifacts.estimators import final_estimator, native_list, predict_quietly
from router.artifacts.files import (
    METADATA_FILE,
    MODEL_FILES,
    REFERENCE_SAMPLE_FILE,
    SIGNATURE_FILE,
    atomic_write,
)
from router.artifacts.formats import FORMATS, write_model
from router.artifacts.load import read_verified
from router.artifacts.reference import (
    HISTOGRAM_BINS,
    REFERENCE_SAMPLE_ROWS,
    REFERENCE_SAMPLE_SEED,
    distribution,
    feature_dtypes,
    finite,
    histogram,
    json_native,
    resolve_feature_names,
)
from router.artifacts.signing import load_private_key, write_signature
from router.artifacts.versions import library_versions

__all__ = ["save_model", "sign_directory"]


def save_model(
    model: Any,
    directory: str | Path,
    *,
    name: str,
    version: str | int,
    X_train: Any,
    y_train: Any = None,
    feature_names: Sequence[str] | None = None,
    metrics: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    format: str = "joblib",
) -> Path:
    """Write a fitted model as a model directory and return the directory's path.

    Arguments:
        model: a fitted scikit-learn estimator or pipeline (preprocessing included) that accepts
            a 2-D float array whose columns are the features in order.
        directory: where to write; created if missing (``models/<name>/<version>`` by convention).
        name, version: the model's identity; ``version`` is stored as a string.
        X_train: the training features (array-like or a DataFrame); gives the feature ranges,
            the reference histograms, the reference sample and the prediction distribution.
        y_train: the training targets, optional; their distribution is kept as
            ``reference.targets``.
        feature_names: the feature names in column order; else ``X_train.columns``, else the
            model's ``feature_names_in_``, else ``f0, f1, ...``.
        metrics: held-out metrics to record, e.g. ``{"accuracy": 0.95}``.
        overwrite: replace the files of an existing model directory (refused otherwise, since a
            versioned directory is meant to be immutable once served); a signature of the old
            files is removed.
        format: ``"joblib"`` (``model.joblib``, a pickle) or ``"skops"`` (``model.skops``, which
            loads without running code; needs the ``skops`` extra). Recorded as
            ``metadata["format"]``.

    Raises ``NotFittedError`` for an unfitted model, ``FileExistsError`` for an existing model
    directory without ``overwrite``, and ``ValueError`` for inputs that cannot be served (feature
    names that disagree with the model, non-numeric features, a model that fails on a float
    array in feature order, an unknown format).
    """
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string")
    version = str(version)
    if not version:
        raise ValueError("version must be non-empty")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    try:
        check_is_fitted(model)
    except NotFittedError as exc:
        raise NotFittedError(
            f"model {name!r} is not fitted: call fit() before save_model ({exc})"
        ) from exc

    try:
        X = np.asarray(X_train, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"X_train must be numeric: {exc}") from exc
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X_train must be a non-empty 2-D table, got shape {X.shape}")
    n_rows, n_columns = X.shape
    names = resolve_feature_names(model, X_train, feature_names, n_columns)
    recorded_metrics = json_native(dict(metrics or {}), "metrics")

    try:
        if hasattr(model, "feature_names_in_"):
            predictions = np.asarray(predict_quietly(model.predict, X))
        else:
            predictions = np.asarray(model.predict(X))
    except Exception as exc:
        raise ValueError(
            f"model {name!r} cannot predict on X_train as a float array in feature order, which "
            f"is how the router calls it: {type(exc).__name__}: {exc}"
        ) from exc
    if predictions.ndim != 1:
        raise ValueError(
            f"only single-output models are supported; predict gave shape {predictions.shape}"
        )

    classification = bool(is_classifier(model))
    classes: list[Any] | None = None
    if classification:
        raw_classes = getattr(model, "classes_", None)
        if raw_classes is None or np.ndim(raw_classes) != 1:
            raise ValueError(f"classifier {name!r} has no one-dimensional classes_")
        classes = native_list(raw_classes)

    targets = None
    if y_train is not None:
        y = np.asarray(y_train)
        if y.ndim != 1 or len(y) != n_rows:
            raise ValueError(f"y_train must be 1-D with {n_rows} values, got shape {y.shape}")
        targets = distribution(y, classes)

    features = []
    histograms = {}
    for i, (feature, dtype) in enumerate(zip(names, feature_dtypes(X_train, X), strict=True)):
        kept = finite(X[:, i])
        features.append(
            {
                "name": feature,
                "dtype": dtype,
                "min": float(kept.min()) if kept.size else None,
                "max": float(kept.max()) if kept.size else None,
            }
        )
        histograms[feature] = histogram(X[:, i])

    rng = np.random.default_rng(REFERENCE_SAMPLE_SEED)
    rows = np.sort(rng.choice(n_rows, size=min(n_rows, REFERENCE_SAMPLE_ROWS), replace=False))
    sample = np.ascontiguousarray(X[rows])

    directory = Path(directory)
    model_path = directory / MODEL_FILES[format]
    metadata_path = directory / METADATA_FILE
    existing = [directory / f for f in (*MODEL_FILES.values(), METADATA_FILE)]
    if not overwrite and any(path.exists() for path in existing):
        raise FileExistsError(
            f"{directory} already holds a model; save under a new version or pass overwrite=True"
        )
    directory.mkdir(parents=True, exist_ok=True)
    # A signature of the old files would no longer verify, and the other format's model file
    # would sit beside one the metadata does not name.
    for stale in (SIGNATURE_FILE, *(f for f in MODEL_FILES.values() if f != model_path.name)):
        with contextlib.suppress(FileNotFoundError):
            (directory / stale).unlink()

    model_digest = atomic_write(model_path, lambda fh: write_model(model, format, fh))
    sample_digest = atomic_write(
        directory / REFERENCE_SAMPLE_FILE, lambda fh: np.save(fh, sample, allow_pickle=False)
    )
    metadata = {
        "name": name,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "task": "classification" if classification else "regression",
        "model_type": type(final_estimator(model)).__name__,
        "features": features,
        "classes": classes,
        "metrics": recorded_metrics,
        "reference": {
            "bins": HISTOGRAM_BINS,
            "features": histograms,
            "predictions": distribution(predictions, classes),
            "targets": targets,
            "sample": {"file": REFERENCE_SAMPLE_FILE, "sha256": sample_digest, "rows": len(rows)},
        },
        "sha256": model_digest,
        "format": format,
        "library_versions": library_versions(),
    }
    text = json.dumps(json_native(metadata, "metadata"), indent=2, ensure_ascii=False)
    atomic_write(metadata_path, lambda fh: fh.write(text.encode() + b"\n"))
    return directory


def sign_directory(directory: str | Path, private_key_file: str | Path) -> Path:
    """Check a model directory's files against their digests, then sign it; ``signature.json``.

    A directory whose files no longer match their recorded digests is refused
    (:class:`~router.errors.DigestMismatchError`): signing it would vouch for a changed file.
    """
    key = load_private_key(private_key_file)
    path = Path(directory)
    files = read_verified(path)
    return write_signature(path, files.digests, key)
