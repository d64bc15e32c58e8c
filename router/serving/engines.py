"""Which engine computes a classifier's probabilities: ONNX Runtime when it matches scikit-learn
on the model's reference sample, else scikit-learn itself.

The ``fast`` extra (``pip install 'router[fast]'``: skl2onnx and onnxruntime) makes a faster
engine available. At load, :func:`choose_engine` converts the pipeline with skl2onnx and keeps
the conversion only if, on the reference sample saved with the model, ONNX Runtime's labels are
identical to scikit-learn's ``predict`` and every probability is within :data:`PARITY_TOLERANCE`
of ``predict_proba``.

The preprocessing steps and the final estimator are converted apart. Converted with the forest,
a StandardScaler runs in float32 and moves values across split thresholds (docs/performance.md), so
the preprocessing gets a float64 graph of its own, kept only when it reproduces scikit-learn's
output on the sample (a StandardScaler does, bit for bit); otherwise it runs in scikit-learn.
For the final estimator, conversions are tried from the most to the least precise and the first
that passes is kept:

1. ``float64, exact forest`` (random forests, extra trees, decision trees): scikit-learn
   compares inputs rounded to float32 with float64 thresholds and adds the trees' votes in
   float64. skl2onnx offers no graph that does this (its double conversion rounds the thresholds
   to float32 and fails parity; its float32 one sums in float32, off by up to 1e-6), so the graph
   is built here from the fitted trees (ONNX-ML opset 5 ``TreeEnsemble``, each tree walked
   once; ``router.serving.onnx_graphs``): its probabilities are scikit-learn's, bit for bit.
2. ``float64``: skl2onnx's double conversion, exact for linear models and most others.
3. ``float32``: skl2onnx's float conversion.

``ROUTER_ENGINE=sklearn`` turns the fast engine off; ``auto`` (the default) uses it where the
check passes. Every model carries its engine and the reason for it (``/config``, ``/metrics``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from router.serving.onnx_graphs import EXACT_TREES, convert, session, session_of

__all__ = [
    "ENGINE_ENV",
    "ONNXRUNTIME",
    "PARITY_TOLERANCE",
    "SKLEARN",
    "TIE_MARGINS",
    "EngineChoice",
    "OnnxRunner",
    "choose_engine",
    "fast_extra_installed",
    "split_pipeline",
    "transform_steps",
]

log = logging.getLogger("router.serving.engines")

ENGINE_ENV = "ROUTER_ENGINE"
SKLEARN = "scikit-learn"
ONNXRUNTIME = "onnxruntime"
PARITY_TOLERANCE = 1e-6
# Two classes closer than this may rank the other way round in a graph's arithmetic than in
# scikit-learn's float64, so scikit-learn answers such rows: float32 sums of a forest's votes
# are off by up to about 1e-5, float64 sums in another order by about 1e-15. Exact ties (equal
# vote counts) come out bitwise equal in both and are left alone: both pick the first class. The
# exact forest computes what scikit-learn computes, in the same order, so it needs no guard.
TIE_MARGINS = {"float32": 1e-4, "float64": 1e-9}
_TREE_ENSEMBLES = ("RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier",
                   "ExtraTreeClassifier")
_AUTO_VALUES = ("auto", "", "onnxruntime", "onnx")
_SKLEARN_VALUES = ("sklearn", "scikit-learn")
# Conversions are kept per model content: tests and reloads build many ServedModels of one file.
_CACHE_SIZE = 16

Probabilities = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EngineChoice:
    """The engine that serves a model, a sentence saying why, and the ONNX runner if any."""

    engine: str
    reason: str
    runner: OnnxRunner | None = None


def onnx_possible() -> bool:
    """False when the choice is scikit-learn whatever the model (forced, or no fast extra)."""
    setting = os.environ.get(ENGINE_ENV, "auto").strip().lower()
    return setting not in _SKLEARN_VALUES and fast_extra_installed()


def fast_extra_installed() -> bool:
    """True when both skl2onnx and onnxruntime can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("skl2onnx", "onnxruntime"))


class OnnxRunner:
    """Runs a classifier's preprocessing and final estimator, the latter in ONNX Runtime.

    The preprocessing runs in its own float64 ONNX Runtime session when that reproduces
    scikit-learn's output (a StandardScaler does so bit for bit, in a twentieth of the time
    ``transform`` takes), else in scikit-learn. Thread-safe: ONNX Runtime sessions allow
    concurrent ``run`` calls, and fitted scikit-learn transformers are read-only.
    """

    def __init__(self, transformers: list[Any], preprocessing: Any, session: Any,
                 precision: str, quiet: bool, *, chained: bool = False,
                 graphs: tuple[bytes | None, bytes] = (None, b"")) -> None:
        self._transformers = transformers
        # The serialized graphs (preprocessing or None, estimator or the chained one): what
        # another process needs to build the same runner (see rebuild_runner).
        self.graphs = graphs
        # One graph for preprocessing and estimator: one ONNX Runtime call per batch instead
        # of two (each call costs tens of microseconds whatever its size).
        self._chained = chained
        self._pre = preprocessing
        self._pre_input = None if preprocessing is None else preprocessing.get_inputs()[0].name
        self._session = session
        self._input = session.get_inputs()[0].name
        # skl2onnx's classifiers answer (label, probabilities), zipmap off; the exact forest
        # answers probabilities only.
        self._output = session.get_outputs()[-1].name
        self._dtype = np.float32 if precision == "float32" and not chained else np.float64
        self._tie_margin = TIE_MARGINS.get(precision, 0.0)
        self.precision = precision
        self._quiet = quiet
        self.rechecked_rows = 0  # near-tie rows answered by scikit-learn

    @property
    def chained(self) -> bool:
        """One graph for preprocessing and estimator."""
        return self._chained

    def transform(self, X: np.ndarray) -> np.ndarray:
        """The preprocessing's output for ``X`` (float64 rows in feature order)."""
        if self._pre is not None:
            transformed: np.ndarray = self._pre.run(None, {self._pre_input: X})[0]
            return transformed
        return transform_steps(self._transformers, X, self._quiet)

    def raw_probabilities(self, X: np.ndarray) -> np.ndarray:
        """ONNX Runtime's probabilities for ``X``, without the near-tie guard."""
        Z = np.ascontiguousarray(X if self._chained else self.transform(X), dtype=self._dtype)
        out = self._session.run([self._output], {self._input: Z})[0]
        return np.asarray(out, dtype=np.float64)

    def predict_proba(self, X: np.ndarray, exact: Probabilities) -> np.ndarray:
        """Probabilities for ``X``; rows on a near tie are answered by ``exact`` (scikit-learn)."""
        probabilities = self.raw_probabilities(X)
        near = _near_ties(probabilities, self._tie_margin)
        if near is not None:
            self.rechecked_rows += int(near.sum())
            probabilities[near] = exact(X[near])
        return probabilities

    def try_predict_proba(self, X: np.ndarray) -> np.ndarray | None:
        """Probabilities for ``X``, or None when a row is on a near tie (see predict_proba)."""
        probabilities = self.raw_probabilities(X)
        return probabilities if _near_ties(probabilities, self._tie_margin) is None else None


def _near_ties(probabilities: np.ndarray, margin: float) -> np.ndarray | None:
    """Mask of the rows whose two highest probabilities are closer than ``margin`` but not
    equal; None when there is none."""
    if not margin or probabilities.shape[1] < 2 or not len(probabilities):
        return None
    top2 = np.partition(probabilities, -2, axis=1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    near = (gap > 0) & (gap < margin)
    return near if near.any() else None


def transform_steps(transformers: list[Any], X: np.ndarray, quiet: bool) -> Any:
    from router.artifacts import predict_quietly

    for step in transformers:
        X = predict_quietly(step.transform, X) if quiet else step.transform(X)
    return X


def _short(exc: BaseException) -> str:
    """An exception's message on one line, cut to 160 characters, for a reason string."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."


def split_pipeline(model: Any) -> tuple[list[Any], Any]:
    """The preprocessing steps (flattened through nested pipelines) and the final estimator."""
    steps: list[Any] = []
    while isinstance(model, Pipeline):
        steps += [s for _, s in model.steps[:-1] if s is not None and s != "passthrough"]
        model = model.steps[-1][1]
    return steps, model


def _parity(runner: OnnxRunner, sample: np.ndarray, classes: np.ndarray,
            expected_labels: list[Any], expected: np.ndarray) -> tuple[bool, str]:
    got = runner.raw_probabilities(sample)
    if got.shape != expected.shape:
        return False, f"probabilities of shape {got.shape}, expected {expected.shape}"
    labels = classes[got.argmax(axis=1)].tolist()
    differing = sum(a != b for a, b in zip(labels, expected_labels, strict=True))
    worst = float(np.abs(got - expected).max()) if got.size else 0.0
    ok = differing == 0 and worst <= PARITY_TOLERANCE
    return ok, f"{differing} labels differ, max |Δp| {worst:.2g}"


def _preprocessing(transformers: list[Any], sample: np.ndarray, transformed: np.ndarray
                   ) -> tuple[Any, str]:
    """A float64 ONNX graph of the preprocessing steps if it reproduces scikit-learn's output on
    the sample (to 1e-12, relative), else None; and a note saying which."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType

    names = ", ".join(type(t).__name__ for t in transformers)
    try:
        steps = Pipeline([(f"step{i}", t) for i, t in enumerate(transformers)])
        graph = convert_sklearn(steps, initial_types=[("X", DoubleTensorType([None,
                                                                               sample.shape[1]]))])
        checked = session(graph)
        got = checked.run(None, {checked.get_inputs()[0].name: sample})[0]
    except Exception as exc:
        return None, f"{names} in scikit-learn (no float64 graph: {type(exc).__name__})"
    scale = max(1.0, float(np.abs(transformed).max(initial=0)))
    if got.shape != transformed.shape or np.abs(got - transformed).max(initial=0) > 1e-12 * scale:
        return None, f"{names} in scikit-learn (its float64 graph differs)"
    exact = "identical to" if np.array_equal(got, transformed) else "within 1e-12 of"
    return graph, f"{names} in ONNX Runtime (float64, {exact} scikit-learn on the sample)"


def _chain(pre: Any, estimator: Any) -> Any:
    """One graph: the preprocessing's output feeds the estimator (cast to its input type)."""
    from onnx import TensorProto, compose, helper

    pre = compose.add_prefix(pre, "pre_")
    estimator = compose.add_prefix(estimator, "est_")
    source, target = pre.graph.output[0].name, estimator.graph.input[0].name
    to = estimator.graph.input[0].type.tensor_type.elem_type
    link = helper.make_node("Cast", [source], [target], to=to) if to == TensorProto.FLOAT \
        else helper.make_node("Identity", [source], [target])
    graph = helper.make_graph(
        [*pre.graph.node, link, *estimator.graph.node], "pipeline", list(pre.graph.input),
        list(estimator.graph.output),
        initializer=[*pre.graph.initializer, *estimator.graph.initializer])
    opsets: dict[str, int] = {}
    for part in (pre, estimator):
        for opset in part.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v)
                                                    for d, v in opsets.items()])
    model.ir_version = max(pre.ir_version, estimator.ir_version)
    return model


def _runner(transformers: list[Any], pre: Any, estimator: Any, precision: str, quiet: bool
            ) -> OnnxRunner:
    """One session for preprocessing and estimator when they chain, else one for each (or
    scikit-learn for the preprocessing when it has no graph)."""
    if pre is not None:
        try:
            chained = _chain(pre, estimator).SerializeToString()
            return rebuild_runner(transformers, precision, quiet, chained=True,
                                  graphs=(None, chained))
        except Exception as exc:
            log.info("preprocessing and estimator run as two graphs: %s", _short(exc))
    graphs = (None if pre is None else pre.SerializeToString(), estimator.SerializeToString())
    return rebuild_runner(transformers, precision, quiet, chained=False, graphs=graphs)


def rebuild_runner(transformers: list[Any], precision: str, quiet: bool, *, chained: bool,
                   graphs: tuple[bytes | None, bytes]) -> OnnxRunner:
    """A runner from serialized graphs, as a runner's ``graphs`` keeps them (the parity check
    may have run in another process)."""
    pre, estimator = graphs
    return OnnxRunner(transformers, None if pre is None else session_of(pre),
                      session_of(estimator), precision, quiet, chained=chained, graphs=graphs)


def _try_onnx(model: Any, sample: np.ndarray, classes: np.ndarray, quiet: bool,
              sklearn_proba: Probabilities, sklearn_labels: Callable[[np.ndarray], list[Any]]
              ) -> EngineChoice:
    transformers, final = split_pipeline(model)
    transformed = transform_steps(transformers, sample, quiet)
    if not isinstance(transformed, np.ndarray) or transformed.ndim != 2:
        return EngineChoice(SKLEARN, "the preprocessing does not give a dense 2-D array")
    pre, pre_note = _preprocessing(transformers, sample, transformed) if transformers \
        else (None, "")
    expected: tuple[np.ndarray, list[Any]] | None = None  # computed once a graph exists
    tried: list[str] = []
    candidates = ["float64", "float32"]
    if type(final).__name__ in _TREE_ENSEMBLES and getattr(final, "n_outputs_", 1) == 1:
        candidates.insert(0, EXACT_TREES)
    for precision in candidates:
        try:
            runner = _runner(transformers, pre, convert(final, transformed.shape[1], precision),
                             precision, quiet)
            if expected is None:
                expected = sklearn_proba(sample), sklearn_labels(sample)
            ok, detail = _parity(runner, sample, classes, expected[1], expected[0])
        except Exception as exc:
            tried.append(f"{precision}: {type(exc).__name__}: {_short(exc)}")
            continue
        if ok:
            return EngineChoice(
                ONNXRUNTIME,
                f"parity on {len(sample)} reference rows: {detail}; "
                + (f"{pre_note}; " if pre_note else "")
                + f"{type(final).__name__} in ONNX Runtime ({precision})"
                + ("; one graph" if runner._chained else "")
                + (f"; rejected: {'; '.join(tried)}" if tried else ""), runner)
        tried.append(f"{precision}: {detail}")
    return EngineChoice(SKLEARN, f"no conversion of {type(final).__name__} matched scikit-learn "
                                 f"on {len(sample)} reference rows ({'; '.join(tried)})")


_cache: OrderedDict[tuple[Any, ...], EngineChoice] = OrderedDict()
_cache_lock = threading.Lock()


def choose_engine(model: Any, *, key: str, task: str, has_probabilities: bool,
                  label_source: str, classes: tuple[Any, ...] | None,
                  sample: np.ndarray | None, quiet: bool, sklearn_proba: Probabilities,
                  sklearn_labels: Callable[[np.ndarray], list[Any]]) -> EngineChoice:
    """The engine for one loaded model.

    Args:
        model: the fitted pipeline.
        key: the model's content digest; choices are cached per digest and sample.
        task, has_probabilities, label_source, classes: as the ServedModel decided them.
        sample: the reference sample (float64, feature order), or None.
        quiet: whether to silence scikit-learn's feature-names warning (fitted on a DataFrame).
        sklearn_proba, sklearn_labels: scikit-learn's ``predict_proba`` and ``predict``, the
            answers ONNX Runtime must match.
    """
    setting = os.environ.get(ENGINE_ENV, "auto").strip().lower()
    if setting in _SKLEARN_VALUES:
        return EngineChoice(SKLEARN, f"{ENGINE_ENV}={setting}")
    if setting not in _AUTO_VALUES:
        log.warning("%s=%r is not auto or sklearn: serving with scikit-learn", ENGINE_ENV,
                    setting)
        return EngineChoice(SKLEARN, f"{ENGINE_ENV}={setting!r} is not auto or sklearn")
    if task != "classification" or classes is None:
        return EngineChoice(SKLEARN, "only classifiers are converted")
    if not has_probabilities:
        return EngineChoice(SKLEARN, "the model has no predict_proba")
    if label_source != "predict_proba":
        return EngineChoice(SKLEARN, "its labels come from predict, not from its probabilities")
    if sample is None or len(sample) == 0:
        return EngineChoice(SKLEARN, "no reference sample to check parity on")
    if not fast_extra_installed():
        return EngineChoice(SKLEARN, "the fast extra is not installed "
                                     "(pip install 'router[fast]')")
    cache_key = (key, hashlib.sha256(np.ascontiguousarray(sample).tobytes()).hexdigest(),
                 tuple(map(str, classes)))
    with _cache_lock:
        cached = _cache.get(cache_key)
        if cached is None:
            try:
                cached = _try_onnx(model, sample, np.array(classes, dtype=object), quiet,
                                   sklearn_proba, sklearn_labels)
            except Exception as exc:
                # A model that scikit-learn itself cannot score on its sample: let it serve as
                # it is and fail (or not) per request, where the error is reported.
                cached = EngineChoice(SKLEARN, f"parity check failed: {type(exc).__name__}: "
                                               f"{_short(exc)}")
            _cache[cache_key] = cached
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    return cached
