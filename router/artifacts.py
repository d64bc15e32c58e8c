"""Model directories on disk: model.joblib, metadata.json, the reference sample and their digests.

A model directory ``models/<name>/<version>/`` holds:

``model.joblib``
    the whole fitted pipeline, as ``joblib.dump`` writes it.
``reference_sample.npy``
    at most :data:`REFERENCE_SAMPLE_ROWS` training rows (float64, feature order), drawn at random
    with a fixed seed; used for KS drift tests and for checking a faster backend's parity.
``metadata.json``
    every key of SPEC.md's "Model directory" table; written last, so a directory whose metadata
    exists is complete.

``reference`` in the metadata has this shape (all lists are JSON-native)::

    {"bins": 10,
     "features": {name: {"edges": [11 floats], "counts": [10 ints]}, ...},
     "predictions": {"kind": "classes", "classes": [...], "counts": [...], "shares": [...]}
                  | {"kind": "histogram", "edges": [...], "counts": [...]},
     "targets": same shape as "predictions" (from y_train), or null,
     "sample": {"file": "reference_sample.npy", "sha256": "...", "rows": n}}

Histograms use :data:`HISTOGRAM_BINS` equal-width bins between the finite minimum and maximum
seen in training; non-finite values (NaN, inf) are left out of ``min``/``max`` and of the counts,
so the counts of a feature sum to the number of its finite training values.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.base import is_classifier
from sklearn.exceptions import InconsistentVersionWarning, NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from router.errors import DigestMismatchError, ModelLoadError

__all__ = [
    "HISTOGRAM_BINS",
    "METADATA_FILE",
    "METADATA_KEYS",
    "MODEL_FILE",
    "REFERENCE_SAMPLE_FILE",
    "REFERENCE_SAMPLE_ROWS",
    "LibraryVersionWarning",
    "ModelArtifact",
    "file_sha256",
    "final_estimator",
    "has_predict_proba",
    "library_versions",
    "list_models",
    "load_model",
    "predict_quietly",
    "save_model",
    "to_native",
]

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
REFERENCE_SAMPLE_FILE = "reference_sample.npy"
HISTOGRAM_BINS = 10
REFERENCE_SAMPLE_ROWS = 1000
REFERENCE_SAMPLE_SEED = 20240607

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

# Libraries whose pickles are only trusted within one major.minor release.
_CHECKED_LIBRARIES = ("scikit-learn", "numpy", "joblib")
_FEATURE_NAMES_WARNING = r"X does not have valid feature names"


class LibraryVersionWarning(UserWarning):
    """A model was saved with another major.minor of scikit-learn, numpy or joblib."""


@dataclass(frozen=True)
class ModelArtifact:
    """A verified model directory: the unpickled ``model``, its ``metadata`` and ``path``.

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


# --------------------------------------------------------------------------- helpers


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """The versions recorded in ``metadata.json`` and compared at load time."""
    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
    }


def final_estimator(model: Any) -> Any:
    """The last step of a (possibly nested) Pipeline, or the model itself."""
    while isinstance(model, Pipeline):
        model = model.steps[-1][1]
    return model


def _safe_hasattr(obj: Any, attribute: str) -> bool:
    # hasattr only swallows AttributeError; a property that raises anything else must not
    # take the caller down, it just means the capability is not usable.
    try:
        getattr(obj, attribute)
    except Exception:
        return False
    return True


def has_predict_proba(model: Any) -> bool:
    """True when both the model and its final step offer ``predict_proba``.

    Some estimators expose the attribute only conditionally and raise from the property
    (``SVC(probability=False)``), so this never raises.
    """
    return _safe_hasattr(model, "predict_proba") and _safe_hasattr(
        final_estimator(model), "predict_proba"
    )


def to_native(value: Any) -> Any:
    """A numpy scalar as the plain Python scalar JSON can carry; other values unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _native_list(values: Any) -> list[Any]:
    array = np.asarray(values)
    if array.dtype.kind in "biufU":
        return array.tolist()
    return [to_native(v) for v in array.ravel().tolist()]


def predict_quietly(method: Any, X: np.ndarray) -> Any:
    """Call ``method(X)`` with sklearn's "X does not have valid feature names" warning off.

    The router always passes a numpy array in feature order; a pipeline fitted on a DataFrame
    would otherwise warn on every call. Only that one warning is filtered; ``catch_warnings``
    is process-global, so callers use this only for models that were fitted with names.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FEATURE_NAMES_WARNING, category=UserWarning)
        return method(X)


def _atomic_write(path: Path, write: Any) -> str:
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


# --------------------------------------------------------------------------- save


def _resolve_feature_names(
    model: Any, X_train: Any, feature_names: Sequence[str] | None, n_columns: int
) -> list[str]:
    model_names = getattr(model, "feature_names_in_", None)
    if feature_names is not None:
        names = [str(n) for n in feature_names]
    elif hasattr(X_train, "columns"):
        names = [str(n) for n in X_train.columns]
    elif model_names is not None:
        names = [str(n) for n in model_names]
    else:
        names = [f"f{i}" for i in range(n_columns)]
    if len(names) != n_columns:
        raise ValueError(f"{len(names)} feature names for {n_columns} columns of X_train")
    if len(set(names)) != len(names):
        raise ValueError(f"feature names must be unique, got {names}")
    # The router feeds the model a plain array in metadata order: if the model learned other
    # names (or the same in another order), every prediction would silently use wrong columns.
    if model_names is not None and [str(n) for n in model_names] != names:
        raise ValueError(
            f"feature names {names} differ from the names the model was fitted with "
            f"{[str(n) for n in model_names]}; pass X_train with the training columns in order"
        )
    return names


def _feature_dtypes(X_train: Any, X: np.ndarray) -> list[str]:
    dtypes = getattr(X_train, "dtypes", None)
    if dtypes is not None and not isinstance(dtypes, np.dtype):
        listed = [str(t) for t in dtypes]
        if len(listed) == X.shape[1]:
            return listed
    source = X_train.dtype if isinstance(X_train, np.ndarray) else X.dtype
    return [str(source)] * X.shape[1]


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _histogram(values: np.ndarray) -> dict[str, list[Any]]:
    finite = _finite(np.asarray(values, dtype=np.float64))
    if finite.size == 0:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _class_distribution(labels: list[Any], classes: list[Any]) -> dict[str, Any]:
    index = {c: i for i, c in enumerate(classes)}
    counts = [0] * len(classes)
    for label in labels:
        position = index.get(label)
        if position is not None:
            counts[position] += 1
    total = len(labels)
    shares = [c / total if total else 0.0 for c in counts]
    return {"kind": "classes", "classes": classes, "counts": counts, "shares": shares}


def _distribution(values: Any, classes: list[Any] | None) -> dict[str, Any]:
    if classes is not None:
        return _class_distribution(_native_list(values), classes)
    return {"kind": "histogram", **_histogram(np.asarray(values, dtype=np.float64))}


def _json_native(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_native(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_native(v, where) for v in value]
    value = to_native(value)
    if isinstance(value, float) and not np.isfinite(value):
        raise ValueError(f"{where} is {value}; metadata.json holds finite numbers only")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"{where} has a value of type {type(value).__name__} that JSON cannot hold")


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
            versioned directory is meant to be immutable once served).

    Raises ``NotFittedError`` for an unfitted model, ``FileExistsError`` for an existing model
    directory without ``overwrite``, and ``ValueError`` for inputs that cannot be served (feature
    names that disagree with the model, non-numeric features, a model that fails on a float
    array in feature order).
    """
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string")
    version = str(version)
    if not version:
        raise ValueError("version must be non-empty")
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
    names = _resolve_feature_names(model, X_train, feature_names, n_columns)
    recorded_metrics = _json_native(dict(metrics or {}), "metrics")

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
        classes = _native_list(raw_classes)

    targets = None
    if y_train is not None:
        y = np.asarray(y_train)
        if y.ndim != 1 or len(y) != n_rows:
            raise ValueError(f"y_train must be 1-D with {n_rows} values, got shape {y.shape}")
        targets = _distribution(y, classes)

    features = []
    histograms = {}
    for i, (feature, dtype) in enumerate(zip(names, _feature_dtypes(X_train, X), strict=True)):
        finite = _finite(X[:, i])
        features.append(
            {
                "name": feature,
                "dtype": dtype,
                "min": float(finite.min()) if finite.size else None,
                "max": float(finite.max()) if finite.size else None,
            }
        )
        histograms[feature] = _histogram(X[:, i])

    rng = np.random.default_rng(REFERENCE_SAMPLE_SEED)
    rows = np.sort(rng.choice(n_rows, size=min(n_rows, REFERENCE_SAMPLE_ROWS), replace=False))
    sample = np.ascontiguousarray(X[rows])

    directory = Path(directory)
    model_path = directory / MODEL_FILE
    metadata_path = directory / METADATA_FILE
    if not overwrite and (model_path.exists() or metadata_path.exists()):
        raise FileExistsError(
            f"{directory} already holds a model; save under a new version or pass overwrite=True"
        )
    directory.mkdir(parents=True, exist_ok=True)

    model_digest = _atomic_write(model_path, lambda fh: joblib.dump(model, fh))
    sample_digest = _atomic_write(
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
            "predictions": _distribution(predictions, classes),
            "targets": targets,
            "sample": {"file": REFERENCE_SAMPLE_FILE, "sha256": sample_digest, "rows": len(rows)},
        },
        "sha256": model_digest,
        "library_versions": library_versions(),
    }
    text = json.dumps(_json_native(metadata, "metadata"), indent=2, ensure_ascii=False)
    _atomic_write(metadata_path, lambda fh: fh.write(text.encode() + b"\n"))
    return directory


# --------------------------------------------------------------------------- load


def _read_metadata(directory: Path) -> dict[str, Any]:
    metadata_path = directory / METADATA_FILE
    if not directory.exists():
        raise ModelLoadError(f"{directory}: model directory does not exist")
    if not directory.is_dir():
        raise ModelLoadError(f"{directory}: not a directory")
    try:
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{metadata_path}: missing; not a model directory") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{metadata_path}: unreadable or not JSON ({exc})") from None
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
    return metadata


def _verify_digest(path: Path, expected: str) -> None:
    try:
        actual = file_sha256(path)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: missing") from None
    except OSError as exc:
        raise ModelLoadError(f"{path}: unreadable ({exc})") from None
    if actual != expected:
        raise DigestMismatchError(
            f"{path}: digest mismatch: expected sha256 {expected} (from {METADATA_FILE}), "
            f"actual {actual}; refusing to load a file that changed after it was saved",
            [{"file": str(path), "expected": expected, "actual": actual}],
        )


@contextlib.contextmanager
def _collect_version_warnings() -> Iterator[list[InconsistentVersionWarning]]:
    """Catch sklearn's InconsistentVersionWarning while unpickling; re-emit every other one."""
    noted: list[InconsistentVersionWarning] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        yield noted
    for w in caught:
        if issubclass(w.category, InconsistentVersionWarning):
            noted.append(w.message)  # type: ignore[arg-type]
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(str(version).split(".")[:2])


def _version_problems(
    metadata: dict[str, Any], sklearn_notes: list[InconsistentVersionWarning]
) -> list[str]:
    saved = metadata["library_versions"]
    current = library_versions()
    problems = []
    for library in _CHECKED_LIBRARIES:
        was = saved.get(library)
        if was is not None and _major_minor(was) != _major_minor(current[library]):
            problems.append(f"{library} {was} at save time, {current[library]} now")
    if sklearn_notes and not any(p.startswith("scikit-learn") for p in problems):
        estimators = sorted({note.estimator_name for note in sklearn_notes})
        note = sklearn_notes[0]
        problems.append(
            f"scikit-learn {note.original_sklearn_version} pickled "
            f"{', '.join(estimators)}, {note.current_sklearn_version} now"
        )
    return problems


def _load_reference_sample(directory: Path, metadata: dict[str, Any]) -> np.ndarray | None:
    entry = metadata["reference"].get("sample")
    if entry is None:
        return None
    metadata_path = directory / METADATA_FILE
    if not isinstance(entry, dict) or not {"file", "sha256"} <= entry.keys():
        raise ModelLoadError(f"{metadata_path}: reference.sample needs 'file' and 'sha256'")
    path = directory / str(entry["file"])
    _verify_digest(path, str(entry["sha256"]))
    try:
        sample = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a numpy array file ({exc})") from None
    n_features = len(metadata["features"])
    if sample.ndim != 2 or sample.shape[1] != n_features:
        raise ModelLoadError(f"{path}: shape {sample.shape} does not match {n_features} features")
    return sample.astype(np.float64, copy=False)


def _unpickle(model_path: Path) -> Any:
    with open(model_path, "rb") as fh:
        return joblib.load(fh)


def load_model(directory: str | Path) -> ModelArtifact:
    """Verify and load a model directory written by :func:`save_model`.

    The order is: metadata.json (must be JSON with every key), then the sha256 of model.joblib,
    and only then unpickling, so a file that changed is never unpickled. Every failure raises
    :class:`~router.errors.ModelLoadError` (or its :class:`~router.errors.DigestMismatchError`)
    whose message names the path; pickle's own traceback is not chained. A scikit-learn, numpy or
    joblib major.minor that differs from the one recorded (or an sklearn
    ``InconsistentVersionWarning`` while unpickling) gives one :class:`LibraryVersionWarning`.
    """
    path = Path(directory)
    metadata = _read_metadata(path)
    model_path = path / MODEL_FILE
    _verify_digest(model_path, metadata["sha256"])
    reference_sample = _load_reference_sample(path, metadata)

    try:
        with _collect_version_warnings() as sklearn_notes:
            model = _unpickle(model_path)
    except Exception as exc:
        raise ModelLoadError(
            f"{model_path}: cannot unpickle the model ({type(exc).__name__}: {exc})"
        ) from None
    if not callable(getattr(model, "predict", None)):
        raise ModelLoadError(f"{model_path}: holds a {type(model).__name__}, not a model")

    problems = _version_problems(metadata, sklearn_notes)
    if problems:
        warnings.warn(
            f"{path}: model saved with other library versions ({'; '.join(problems)}); "
            "its predictions may differ or fail. Re-save it with the current versions.",
            LibraryVersionWarning,
            stacklevel=2,
        )

    if metadata["task"] == "classification":
        model_classes = getattr(model, "classes_", None)
        if model_classes is not None and _native_list(model_classes) != metadata["classes"]:
            raise ModelLoadError(
                f"{path / METADATA_FILE}: classes {metadata['classes']} differ from the "
                f"model's {_native_list(model_classes)}"
            )
    return ModelArtifact(
        model=model, metadata=metadata, path=path, reference_sample=reference_sample
    )


# --------------------------------------------------------------------------- listing


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
        metadata = _read_metadata(directory)
    except ModelLoadError as exc:
        return {**row, "status": f"invalid metadata ({exc.message})"}
    row.update({key: str(metadata[key]) for key in row if key != "path" and key in metadata})
    try:
        _verify_digest(directory / MODEL_FILE, metadata["sha256"])
    except DigestMismatchError:
        return {**row, "status": "digest mismatch"}
    except ModelLoadError:
        return {**row, "status": f"{MODEL_FILE} missing or unreadable"}
    return {**row, "status": "ok"}


def list_models(root: str | Path) -> list[dict[str, Any]]:
    """Every model directory at or under ``root``, sorted by name then version.

    A model directory is one holding ``metadata.json`` or ``model.joblib``; hidden directories
    and ``__pycache__`` are skipped. Each row has ``path``, ``name``, ``version``, ``task``,
    ``model_type``, ``created_at``, ``sha256`` (``"?"`` where unknown) and ``status``: ``"ok"``
    when the metadata is complete and the model file matches its digest, else what is wrong.
    Nothing is unpickled, so listing is cheap and safe.
    """
    rows = []
    for current, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(
            d for d in subdirectories if not d.startswith(".") and d != "__pycache__"
        )
        if METADATA_FILE in files or MODEL_FILE in files:
            rows.append(_describe(Path(current)))
    return sorted(rows, key=lambda r: (r["name"], _version_order(r["version"])))
