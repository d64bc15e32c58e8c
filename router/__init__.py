"""router: A/B and shadow tests of scikit-learn models; the public Python API lives here.

``import router`` stays cheap (no scikit-learn, no starlette): the names below load their module
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.lazy import lazy_names

if TYPE_CHECKING:
    from router.artifacts import LibraryVersionWarning, ModelArtifact, load_model, save_model

__version__ = "0.1.0"

__all__ = [
    "LibraryVersionWarning",
    "ModelArtifact",
    "__version__",
    "load_model",
    "save_model",
]

# Importing scikit-learn takes about a second; commands such as `router validate` or
# `router --help` should not pay for it.
_LAZY = {
    "LibraryVersionWarning": "router.artifacts",
    "ModelArtifact": "router.artifacts",
    "load_model": "router.artifacts",
    "save_model": "router.artifacts",
}

__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
