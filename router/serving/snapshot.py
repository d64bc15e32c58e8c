"""The immutable Snapshot a request reads (config, revision, loaded models) and its holder.

A request takes ``holder.current`` once and uses nothing else, so a reload can never mix a new
champion with an old challenger: the next Snapshot is built whole, aside, then swapped in with
one reference assignment.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import orjson

from router.config import RouterConfig
from router.errors import ConfigError, ConfigProblem, ModelLoadError
from router.outcomes.answered import ModelTag
from router.serving.assignment import Split
from router.serving.input_bounds import common_bound, input_bound
from router.serving.model import ServedModel
from router.serving.registry import ModelRegistry


@dataclass(frozen=True)
class Snapshot:
    config: RouterConfig
    revision: int
    models: Mapping[str, ServedModel]  # by role: champion, challenger, previous
    loaded_at: float = field(default_factory=time.time)

    @cached_property
    def champion(self) -> ServedModel:
        return self.models["champion"]

    @property
    def challenger(self) -> ServedModel | None:
        return self.models.get("challenger")

    @cached_property
    def arms(self) -> tuple[str, ...]:
        """The challengers' variants in bucket order (``router.config.challengers``)."""
        return tuple(arm.variant for arm in self.config.arms)

    @cached_property
    def variants(self) -> tuple[str, ...]:
        """The champion and every challenger, as they are served and logged (``previous`` is
        kept loaded and serves nothing)."""
        return ("champion", *self.arms)

    @cached_property
    def arm_percents(self) -> tuple[float, ...]:
        """Each arm's share of units in ab mode, in bucket order."""
        return tuple(arm.percent for arm in self.config.arms)

    @cached_property
    def split(self) -> Split | None:
        """Which arm serves a unit, worked out once a snapshot; None when nothing is split
        (one model, or shadow mode: the champion answers everything)."""
        if self.config.mode != "ab" or not self.arms:
            return None
        return Split(self.config.experiment, self.arm_percents)

    @cached_property
    def body_keys(self) -> frozenset[str]:
        """The top-level fields a ``/predict`` body may hold besides its features: the sticky
        key's and the segments' that are body fields."""
        config = self.config
        keys = (config.traffic.sticky_key, *config.analysis.segments)
        return frozenset(key.name for key in keys if key is not None and key.source == "body")

    @cached_property
    def input_bound(self) -> float:
        """The largest absolute feature value every loaded model takes
        (``router.serving.input_bounds``; probed when the models were loaded: a lookup)."""
        return common_bound(self.models.values())

    @cached_property
    def names(self) -> Mapping[str, str]:
        """The name each role is served under: the YAML's, which may differ from metadata's."""
        return {role: ref.name for role, ref in self.config.model_refs().items()}

    @cached_property
    def tags(self) -> Mapping[str, ModelTag]:
        """Who answers for each role, as the outcome log names it: one tuple each, shared by
        every request the role answers."""
        return {role: ModelTag(self.config.experiment, self.revision, role, self.names[role],
                               model.version, None if model.classes is None
                               else tuple(str(c) for c in model.classes))
                for role, model in self.models.items()}


def load_models(config: RouterConfig, registry: ModelRegistry) -> dict[str, ServedModel]:
    """Load every model the config names; faults name the YAML key and line, as config faults do.

    Each challenger must take the champion's features in the same order, since one validated
    request body is sent to any of them (or to all, in shadow mode).
    """
    models: dict[str, ServedModel] = {}
    problems: list[ConfigProblem] = []
    for role, ref in config.model_refs().items():
        key = f"{config.key_of(role)}.path"
        try:
            models[role] = registry.load(ref.path, config.model_roots)
        except ModelLoadError as exc:
            problems.append(ConfigProblem(key, config.lines.get(key), exc.message))
    champion = models.get("champion")
    for arm in config.arms:
        challenger = models.get(arm.variant)
        if champion is None or challenger is None:
            continue
        key = f"{arm.key}.path"
        if challenger.feature_names != champion.feature_names:
            problems.append(ConfigProblem(
                key, config.lines.get(key),
                f"challenger features {list(challenger.feature_names)} differ from the "
                f"champion's {list(champion.feature_names)}"))
        if challenger.task != champion.task:
            problems.append(ConfigProblem(
                key, config.lines.get(key),
                f"challenger is a {challenger.task} model, the champion a {champion.task} one"))
    if champion is not None:
        served = [m for role, m in models.items() if role != "previous"]
        problem = metric_problem(config.metric_for(champion.task), served)
        if problem is not None:
            problems.append(ConfigProblem("analysis.metric", config.lines.get("analysis.metric"),
                                          problem))
    if problems:
        raise ConfigError(config.source, problems)
    for model in models.values():
        input_bound(model)  # probed here, off the event loop, once per loaded model
    return models


def metric_problem(metric: str, served: Sequence[ServedModel]) -> str | None:
    """Why ``metric`` cannot judge the ``served`` models (the champion first), or None."""
    if served[0].task == "regression" and metric in ("accuracy", "log_loss"):
        return f"{metric} judges classifiers; these models are regressors (use mae or rmse)"
    if served[0].task == "classification" and metric in ("mae", "rmse"):
        return (f"{metric} judges regressors; these models are classifiers "
                "(use accuracy or log_loss)")
    missing = [m.name for m in served if not m.has_probabilities]
    if metric == "log_loss" and missing:
        return (f"log_loss needs probabilities; {', '.join(missing)} has no predict_proba "
                "(use accuracy)")
    return None


def config_digest(config: RouterConfig, models: Mapping[str, ServedModel]) -> str:
    """A digest of what is served: the config's content and each model file's sha256.

    Replacing a model file in place is a change of revision, though the YAML did not change.
    """
    content = {"config": config.to_dict(),
               "models": {role: model.sha256 for role, model in sorted(models.items())}}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


class SnapshotHolder:
    """Holds the current Snapshot; swapping is one assignment, atomic under the GIL.

    ``current`` is a plain attribute, not a property: every request reads it."""

    def __init__(self, first: Snapshot) -> None:
        self.current = first

    def swap(self, new: Snapshot) -> None:
        self.current = new
