"""Library versions recorded at save time and compared at load time."""

from __future__ import annotations

import contextlib
import platform
import warnings
from collections.abc import Iterator
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.exceptions import InconsistentVersionWarning

__all__ = ["LibraryVersionWarning", "collect_version_warnings", "library_versions",
           "version_problems"]

# Libraries whose pickles are only trusted within one major.minor release.
_CHECKED_LIBRARIES = ("scikit-learn", "numpy", "joblib")


class LibraryVersionWarning(UserWarning):
    """A model was saved with another major.minor of scikit-learn, numpy or joblib."""


def library_versions() -> dict[str, str]:
    """The versions recorded in ``metadata.json`` and compared at load time."""
    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
    }


@contextlib.contextmanager
def collect_version_warnings() -> Iterator[list[InconsistentVersionWarning]]:
    """Catch sklearn's InconsistentVersionWarning while unpickling; re-emit every other one."""
    noted: list[InconsistentVersionWarning] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        yield noted
    for w in caught:
        if isinstance(w.message, InconsistentVersionWarning):
            noted.append(w.message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(str(version).split(".")[:2])


def version_problems(
    metadata: dict[str, Any], sklearn_notes: list[InconsistentVersionWarning]
) -> list[str]:
    """One line per library whose major.minor differs from the one that saved the model."""
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
