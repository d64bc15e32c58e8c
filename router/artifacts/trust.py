"""What a process trusts when it loads models: a signing key and extra skops types.

Set when the process starts, not in the YAML: the YAML is rewritten by promote and rollback and
followed live, and a trust anchor that an edit of the served file could remove would protect
nothing. ``router serve`` and ``router validate`` take ``--public-key FILE`` and
``--trust-type NAME``; they pass them on (to uvicorn's worker processes too) through
:data:`PUBLIC_KEY_ENV` and :data:`TRUSTED_TYPES_ENV`, which a deployment may also set directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

__all__ = ["PUBLIC_KEY_ENV", "TRUSTED_TYPES_ENV", "ModelTrust"]

PUBLIC_KEY_ENV = "ROUTER_MODEL_PUBLIC_KEY"
TRUSTED_TYPES_ENV = "ROUTER_SKOPS_TRUSTED_TYPES"


@dataclass(frozen=True)
class ModelTrust:
    """``public_key_file``: when set, only directories signed by its private half load.
    ``trusted_types``: skops types to build beyond the defaults."""

    public_key_file: Path | None = None
    trusted_types: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ModelTrust:
        env = os.environ if environ is None else environ
        key = env.get(PUBLIC_KEY_ENV, "").strip()
        types = tuple(t.strip() for t in env.get(TRUSTED_TYPES_ENV, "").split(",") if t.strip())
        return cls(Path(key) if key else None, types)

    def to_env(self) -> dict[str, str]:
        """The variables that give a child process this same trust."""
        return {PUBLIC_KEY_ENV: str(self.public_key_file or ""),
                TRUSTED_TYPES_ENV: ",".join(self.trusted_types)}

    @cached_property
    def public_key(self) -> Any:
        """The loaded key, read once; None without a key file. ``ModelLoadError`` naming the
        file when it is missing or not an Ed25519 public key."""
        if self.public_key_file is None:
            return None
        from router.artifacts.signing import load_public_key

        return load_public_key(self.public_key_file)
