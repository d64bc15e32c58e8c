"""``model_roots``: model directories, and every file read from them, stay inside these roots.

A path is resolved first (symlinks followed, ``..`` folded), then compared with each resolved
root, so neither a symlink nor ``..`` can lead out of a root. Light on purpose: config
validation calls it without importing scikit-learn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["OutsideRootsError", "confine", "root_holding"]


class OutsideRootsError(ValueError):
    """A path that resolves outside every model root; the message says where it leads."""


def root_holding(path: Path, roots: Sequence[Path]) -> Path | None:
    """The resolved root that holds ``path`` once resolved, or None."""
    resolved = Path(os.path.realpath(path))
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if resolved == real_root or resolved.is_relative_to(real_root):
            return real_root
    return None


def confine(path: Path, roots: Sequence[Path]) -> Path:
    """``path`` resolved, if it lies inside one of ``roots``; else :class:`OutsideRootsError`.

    With no roots, anything goes (``model_roots`` is optional) and ``path`` comes back as given.
    """
    if not roots:
        return path
    if root_holding(path, roots) is None:
        resolved = os.path.realpath(path)
        shown = ", ".join(str(r) for r in roots)
        via = "" if str(resolved) == os.path.abspath(path) else f" (it resolves to {resolved})"
        raise OutsideRootsError(f"{path} is outside model_roots ({shown}){via}")
    return Path(os.path.realpath(path))
