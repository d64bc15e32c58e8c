"""Model directories loaded once per content: the registry that caches served models by path
and digest, and starts each one's engine choice."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from router.artifacts import (
    METADATA_FILE,
    MODEL_FILE,
    SIGNATURE_FILE,
    SKOPS_FILE,
    file_sha256,
    load_model,
)
from router.artifacts.metadata import check_inside_roots
from router.artifacts.trust import ModelTrust
from router.serving.engine_check import choice_apart
from router.serving.engines import SKLEARN, EngineChoice, onnx_possible
from router.serving.model import ServedModel
from router.thread_names import name_native_thread

__all__ = ["ModelRegistry", "choose_engine_in_background"]

log = logging.getLogger("router.serving.registry")

ENGINES_NOW, ENGINES_IN_BACKGROUND, ENGINES_UNCHOSEN = "now", "background", "unchosen"


def choose_engine_in_background(served: ServedModel) -> None:
    """Choose the engine in a thread, the check itself in a child process (see
    :mod:`router.serving.engine_check`): the model serves with scikit-learn meanwhile."""
    def run() -> None:
        name_native_thread()
        try:
            # Without a chance of ONNX Runtime the choice is immediate: no child needed.
            served.use_engine(choice_apart(served) if onnx_possible() else served.engine_choice())
        except Exception as exc:
            log.exception("engine choice for %s failed; serving with scikit-learn",
                          served.name)
            served.use_engine(EngineChoice(SKLEARN, f"engine choice failed: "
                                                  f"{type(exc).__name__}: {exc}"))

    threading.Thread(target=run, name=f"engine-{served.name}", daemon=True).start()


class ModelRegistry:
    """Loads model directories into :class:`ServedModel` objects, once per file content.

    The cache key is the resolved directory plus the sha256 of each file a load reads or
    checks (``metadata.json``, the model file, ``signature.json``) as they are on disk now, so a
    changed file reloads and an unchanged one returns the very same object. One entry is kept
    per directory: a reload replaces it (callers still holding the old object keep using it).
    Loading is thread-safe; concurrent loads of one directory load it once.

    ``trust`` (a public key that signatures must verify with, extra skops types) defaults to
    :meth:`ModelTrust.from_env`, so every registry of a process, the shadow worker's too,
    trusts what ``router serve`` was started with.

    ``engines`` says when a new model's engine is chosen: ``"now"`` (the load waits for the
    parity check), ``"background"`` (the gateway: scikit-learn serves until the check passes)
    or ``"unchosen"`` (``router validate``, which serves nothing).
    """

    _CHECKED_FILES = (METADATA_FILE, MODEL_FILE, SKOPS_FILE, SIGNATURE_FILE)

    def __init__(self, trust: ModelTrust | None = None, *, engines: str = ENGINES_NOW) -> None:
        if engines not in (ENGINES_NOW, ENGINES_IN_BACKGROUND, ENGINES_UNCHOSEN):
            raise ValueError(f"engines must be now, background or unchosen, got {engines!r}")
        self.trust = trust if trust is not None else ModelTrust.from_env()
        self.engines = engines
        self._lock = threading.Lock()
        self._directory_locks: dict[Path, threading.Lock] = {}
        self._entries: dict[Path, tuple[tuple[str, ...], ServedModel]] = {}

    def _digests(self, directory: Path) -> tuple[str, ...] | None:
        digests = []
        for name in self._CHECKED_FILES:
            try:
                digests.append(file_sha256(directory / name))
            except FileNotFoundError:
                digests.append("")
            except OSError:
                return None
        return tuple(digests) if digests[0] else None

    def load(self, path: str | Path, model_roots: Sequence[Path] = ()) -> ServedModel:
        """The served model of the directory at ``path``, which must lie inside
        ``model_roots`` when any are given.

        Raises :class:`~router.errors.ModelLoadError` as :func:`~router.artifacts.load_model`.
        """
        directory = Path(path).resolve()
        with self._lock:
            directory_lock = self._directory_locks.setdefault(directory, threading.Lock())
        with directory_lock:
            digests = self._digests(directory)
            entry = self._entries.get(directory)
            if entry is not None and digests is not None and entry[0] == digests:
                if model_roots:
                    # Checked again on a cache hit: the roots are the config's, which changes.
                    check_inside_roots(Path(path), model_roots)
                return entry[1]
            served = ServedModel(load_model(
                Path(path), trusted_types=self.trust.trusted_types,
                public_key=self.trust.public_key, model_roots=model_roots),
                choose_engine_now=self.engines == ENGINES_NOW)
            if self.engines == ENGINES_IN_BACKGROUND:
                choose_engine_in_background(served)
            # Files that appeared between hashing and loading: serve them, cache next time.
            if digests is not None:
                self._entries[directory] = (digests, served)
            return served

    def clear(self) -> None:
        """Forget every cached model."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
