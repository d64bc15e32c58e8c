"""Model directories: writing, reading and verifying them (sha256, signatures, skops).

A model directory ``models/<name>/<version>/`` holds:

``model.joblib`` or ``model.skops``
    the whole fitted pipeline, as ``joblib.dump`` or ``skops.io.dump`` writes it
    (``metadata["format"]`` says which; joblib when the key is absent).
``reference_sample.npy``
    at most :data:`REFERENCE_SAMPLE_ROWS` training rows (float64, feature order), drawn at random
    with a fixed seed; used for KS drift tests and for checking a faster backend's parity.
``metadata.json``
    every key of SPEC.md's "Model directory" table; written last, so a directory whose metadata
    exists is complete.
``signature.json``
    optional: an Ed25519 signature of the directory's digest (:mod:`router.artifacts.signing`).

``reference`` in the metadata has this shape (all lists are JSON-native)::

    {"bins": 10,
     "features": {name: {"edges": [11 floats], "counts": [10 ints]}, ...},
     "predictions": {"kind": "classes", "classes": [...], "counts": [...], "shares": [...]}
                  | {"kind": "histogram", "edges": [...], "counts": [...]},
     "targets": same shape as "predictions" (from y_train), or null,
     "sample": {"file": "reference_sample.npy", "sha256": "...", "rows": n}}

The modules: :mod:`~router.artifacts.files` (names, digests, atomic writes),
:mod:`~router.artifacts.reference` (what is learnt from the training data),
:mod:`~router.artifacts.save`, :mod:`~router.artifacts.metadata` (reading ``metadata.json``),
:mod:`~router.artifacts.load`, :mod:`~router.artifacts.formats` (joblib and skops),
:mod:`~router.artifacts.roots` (``model_roots``), :mod:`~router.artifacts.signing`,
:mod:`~router.artifacts.listing`. The names below load their module on first use, so the light
ones (roots, files, metadata) cost no scikit-learn import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.lazy import lazy_names

if TYPE_CHECKING:
    from router.artifacts.estimators import (
        final_estimator,
        has_predict_proba,
        predict_quietly,
        to_native,
    )
    from router.artifacts.files import (
        METADATA_FILE,
        MODEL_FILE,
        REFERENCE_SAMPLE_FILE,
        SIGNATURE_FILE,
        SKOPS_FILE,
        file_sha256,
    )
    from router.artifacts.formats import SKOPS_TRUSTED_TYPES
    from router.artifacts.listing import list_models
    from router.artifacts.load import ModelArtifact, load_model
    from router.artifacts.metadata import METADATA_KEYS
    from router.artifacts.reference import HISTOGRAM_BINS, REFERENCE_SAMPLE_ROWS
    from router.artifacts.save import save_model, sign_directory
    from router.artifacts.versions import LibraryVersionWarning, library_versions

__all__ = [
    "HISTOGRAM_BINS",
    "METADATA_FILE",
    "METADATA_KEYS",
    "MODEL_FILE",
    "REFERENCE_SAMPLE_FILE",
    "REFERENCE_SAMPLE_ROWS",
    "SIGNATURE_FILE",
    "SKOPS_FILE",
    "SKOPS_TRUSTED_TYPES",
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
    "sign_directory",
    "to_native",
]

_MODULE_OF = {
    "final_estimator": ".estimators", "has_predict_proba": ".estimators",
    "predict_quietly": ".estimators", "to_native": ".estimators",
    "METADATA_FILE": ".files", "MODEL_FILE": ".files", "REFERENCE_SAMPLE_FILE": ".files",
    "SIGNATURE_FILE": ".files", "SKOPS_FILE": ".files", "file_sha256": ".files",
    "SKOPS_TRUSTED_TYPES": ".formats", "list_models": ".listing",
    "METADATA_KEYS": ".metadata", "ModelArtifact": ".load", "load_model": ".load",
    "HISTOGRAM_BINS": ".reference", "REFERENCE_SAMPLE_ROWS": ".reference",
    "save_model": ".save", "sign_directory": ".save",
    "LibraryVersionWarning": ".versions", "library_versions": ".versions",
}

__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF, __all__)
