"""Package names that load their module on first use, so that importing a package is cheap.

Importing scikit-learn takes about a second and SciPy's statistics most of one; a command such
as ``router --help`` or ``router skew`` should pay only for what it uses.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(package: str, module_of: Mapping[str, str], public: Iterable[str]
               ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: each name of ``module_of`` is read from its
    module (``.name`` relative to the package, or absolute) when first asked for, then kept in
    the package's namespace; ``public`` (its ``__all__``) is listed by ``dir()``."""
    listed = set(public)

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | listed)

    return __getattr__, __dir__
