"""The two model file formats: joblib (a pickle: runs code on load) and skops (runs none).

A skops file is a zip of JSON and arrays that skops rebuilds object by object, and it only
builds types on a trusted list: scikit-learn's estimators, numpy and builtins by skops'
defaults, plus :data:`SKOPS_TRUSTED_TYPES` and whatever the caller names. A file that needs any
other type is refused before anything in it is built, with the types listed, so trusting one is
an explicit decision (``router serve --trust-type``, ``load_model(..., trusted_types=)``).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import joblib

from router.artifacts.files import MODEL_FILES
from router.errors import ModelLoadError

__all__ = ["FORMATS", "SKOPS_TRUSTED_TYPES", "read_model", "write_model"]

FORMATS = tuple(MODEL_FILES)

# scikit-learn's compiled tree structure, behind every tree, forest and gradient-boosting model.
# skops leaves it off its default list because it is an extension type; skops rebuilds it from
# its arrays (node table and values), not by calling anything the file names.
SKOPS_TRUSTED_TYPES: tuple[str, ...] = ("sklearn.tree._tree.Tree",)


def _skops() -> Any:
    try:
        import skops.io
    except ImportError:
        raise ModelLoadError(
            "the skops format needs the skops package: pip install 'router[skops]'") from None
    return skops.io


def write_model(model: Any, fmt: str, fh: IO[bytes]) -> None:
    """Serialise ``model`` in format ``fmt`` ("joblib" or "skops") to an open binary file."""
    if fmt == "joblib":
        joblib.dump(model, fh)
    elif fmt == "skops":
        _skops().dump(model, fh)
    else:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def read_model(data: bytes, fmt: str, path: Path, trusted_types: Iterable[str] = ()) -> Any:
    """The model serialised in ``data`` (the checked bytes of ``path``).

    Exceptions from the format's loader propagate, except for a skops file that needs untrusted
    types: a :class:`ModelLoadError` naming ``path`` and the types, raised before anything in
    the file is built.
    """
    if fmt == "joblib":
        return joblib.load(io.BytesIO(data))
    sio = _skops()
    needed = sio.get_untrusted_types(data=data)
    allowed = set(SKOPS_TRUSTED_TYPES) | set(trusted_types)
    refused = sorted(set(needed) - allowed)
    if refused:
        raise ModelLoadError(
            f"{path}: needs types skops does not trust: {', '.join(refused)}; read the file "
            "with skops.io.get_untrusted_types and, if you trust them, name each with "
            "--trust-type (router serve, router validate) or load_model(trusted_types=...)",
            [{"file": str(path), "untrusted_types": refused}])
    return sio.loads(data, trusted=list(needed))
