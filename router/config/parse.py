"""The YAML file read into a :class:`~router.config.model.RouterConfig`; every fault names its
key path and line."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from router.artifacts.roots import OutsideRootsError, confine
from router.config.bounds import MAX_CONFIG_DEPTH, check_yaml_bounds
from router.config.challengers import (
    RESERVED_NAMES,
    arm_problems,
    arms_of,
    read_challengers,
    step_problems,
)
from router.config.model import (
    DEFAULT_STORE,
    MAX_SEGMENT_KEYS,
    METRICS,
    MODES,
    Analysis,
    Batching,
    Guardrails,
    Limits,
    ModelRef,
    Monitoring,
    Rollout,
    RouterConfig,
    Shadow,
    StickyKey,
    Traffic,
)
from router.config.read import (
    _HTTP_TOKEN,
    _boolean,
    _choice,
    _integer,
    _Invalid,
    _key_line,
    _kind,
    _number,
    _Reader,
    _text,
    _value_line,
)
from router.errors import ConfigError, ConfigProblem


def _sticky_key(value: Any, *, token_fields: bool = False) -> StickyKey:
    """``header:NAME`` or ``body:FIELD``; ``token_fields`` holds a body field's name to an HTTP
    token's characters too (a segment's name is a JSON key in the log and in ``/stats``)."""
    source, _, name = _text(value).partition(":")
    if source not in ("header", "body") or not name:
        raise _Invalid(f"must be header:<name> or body:<field>, got {value!r}")
    if (source == "header" or token_fields) and not _HTTP_TOKEN.fullmatch(name):
        raise _Invalid(f"{source} name {name!r} is not an HTTP token (letters, digits and "
                       "!#$%&'*+-.^_`|~ only), so no request could carry it")
    return StickyKey(source, name.lower() if source == "header" else name)


def _segments(value: Any) -> tuple[StickyKey, ...]:
    if not isinstance(value, CommentedSeq):
        raise _Invalid(f"must be a list of header:<name> or body:<field>, got {_kind(value)}")
    if len(value) > MAX_SEGMENT_KEYS:
        raise _Invalid(f"takes at most {MAX_SEGMENT_KEYS} keys, got {len(value)}")
    keys = tuple(_sticky_key(item, token_fields=True) for item in value)
    # /stats names a segment by its name alone, so two keys may not share one.
    names = [key.name for key in keys]
    repeated = next((name for name in names if names.count(name) > 1), None)
    if repeated is not None:
        raise _Invalid(f"{repeated} is listed twice (a segment is named by its name alone)")
    return keys


def _header_name(value: Any) -> str:
    name = _text(value)
    if not _HTTP_TOKEN.fullmatch(name):
        raise _Invalid(f"header name {name!r} is not an HTTP token (letters, digits and "
                       "!#$%&'*+-.^_`|~ only), so no request could carry it")
    return name.lower()


def _rollout_steps(value: Any) -> tuple[bool, tuple[float, ...]]:
    """``(from_shadow, percentages)``: ``shadow`` may open the list, the rest are shares."""
    if not isinstance(value, CommentedSeq) or not value:
        raise _Invalid(f"must be a non-empty list of percentages, got {_kind(value)}")
    from_shadow = value[0] == "shadow"
    rest = list(value)[1:] if from_shadow else list(value)
    if "shadow" in rest:
        raise _Invalid("shadow can only be the first step, before any user sees the challenger")
    if not rest:
        raise _Invalid("needs at least one percentage after shadow, e.g. [shadow, 5, 25, 50]")
    return from_shadow, _percent_steps(rest)


def _percent_steps(value: Any) -> tuple[float, ...]:
    steps = tuple(_number(0, 100)(item) for item in value)
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise _Invalid(f"must rise step by step, got {list(steps)}")
    return steps


def _store_url(value: Any) -> str:
    url = _text(value)
    if not url.startswith(("sqlite://", "postgresql://", "postgres://", "memory://")):
        raise _Invalid(f"must be sqlite:///FILE, postgresql://… or memory://, got {url!r}")
    return url


def resolve_model_path(path: str, base_dir: Path) -> Path:
    """A model path as the YAML writes it, made absolute against the base directory."""
    return Path(path) if Path(path).is_absolute() else (base_dir / path).resolve()


_TOP_KEYS = ("experiment", "mode", "champion", "challenger", "challengers", "previous",
             "traffic", "shadow", "analysis", "rollout", "store", "limits", "batching",
             "model_roots", "monitoring")


def _model_roots(base: Path) -> Callable[[Any], tuple[Path, ...]]:
    def convert(value: Any) -> tuple[Path, ...]:
        if not isinstance(value, CommentedSeq) or not value:
            raise _Invalid(f"must be a non-empty list of directories, got {_kind(value)}")
        roots = []
        for item in value:
            root = Path(os.path.realpath(base / _text(item)))
            if not root.is_dir():
                raise _Invalid(f"{item!r} is not a directory")
            roots.append(root)
        return tuple(roots)
    return convert


def _role_name(role: str) -> Callable[[Any], str]:
    """A model's name under ``role``: any text but another role's name, since the override
    header and the V2 routes take a role or a name, and would reach the other model."""
    def convert(value: Any) -> str:
        name = _text(value)
        if name.lower() in RESERVED_NAMES and name.lower() != role:
            raise _Invalid(f"{name!r} is the name of another role ({', '.join(RESERVED_NAMES)}); "
                           "requests that name it would reach that role's model")
        return name
    return convert


def parse_config(text: str, *, source: str = "<config>", base_dir: Path | None = None
                 ) -> RouterConfig:
    """Parse and validate YAML text; raise ``ConfigError`` listing every problem found."""
    check_yaml_bounds(text, source)
    try:
        root = YAML(typ="rt").load(text)
    except RecursionError:
        raise ConfigError(source, [ConfigProblem(
            "", None, f"nested deeper than {MAX_CONFIG_DEPTH} levels")]) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(source, [ConfigProblem("", line, f"not valid YAML: {problem}")]
                          ) from None
    except YAMLError as exc:
        raise ConfigError(source, [ConfigProblem("", None, f"not valid YAML: {exc}")]
                          ) from None
    if not isinstance(root, CommentedMap):
        raise ConfigError(source, [ConfigProblem("", 1, "must be a YAML mapping of keys")])

    base = base_dir if base_dir is not None else Path.cwd()
    r = _Reader(source)
    for unknown in (k for k in root if k not in _TOP_KEYS):
        r.fail(str(unknown), _key_line(root, unknown),
               f"unknown key (allowed: {', '.join(_TOP_KEYS)})")

    experiment = r.value(root, "", "experiment", _text, "", required=True)
    mode = r.value(root, "", "mode", _choice(*MODES), "single", required=True)

    model_roots = r.value(root, "", "model_roots", _model_roots(base), ())

    def model(key: str, required: bool) -> ModelRef | None:
        node = r.section(root, "", key, ("name", "path"), required=required)
        if node is None:
            return None
        name = r.value(node, key, "name", _role_name(key), required=True)
        path = r.value(node, key, "path", _text, required=True)
        if name is None or path is None:
            return None
        return ModelRef(name, resolve(node, key, path))

    def resolve(node: CommentedMap, key: str, path: str) -> Path:
        try:
            confine(base / path, model_roots)
        except OutsideRootsError as exc:
            r.fail(f"{key}.path", _value_line(node, "path"), str(exc))
        except ValueError:
            pass  # not a path at all: loading the model reports it
        return resolve_model_path(path, base)

    champion = model("champion", True)
    listed = read_challengers(r, root, resolve)
    challenger = model("challenger", mode in ("ab", "shadow") and "challengers" not in root)
    previous = model("previous", False)
    if challenger is not None and champion is not None and challenger.path == champion.path \
            and challenger.name == champion.name:
        r.fail("challenger", _key_line(root, "challenger"),
               "is the same model as the champion")

    traffic = r.record(root, "", "traffic", Traffic, {
        "challenger_percent": _number(0, 100), "sticky_key": _sticky_key,
        "override_header": _header_name, "override_requires_token": _boolean})
    if traffic.override_requires_token and traffic.override_header is None:
        r.fail("traffic.override_requires_token",
               r.lines.get("traffic.override_requires_token"),
               "needs traffic.override_header: there is no header to guard")
    if listed and challenger is None and traffic.challenger_percent:
        r.fail("traffic.challenger_percent", r.lines.get("traffic.challenger_percent"),
               "is the share of challenger:, which this file does not name; each entry of "
               "challengers: has a percent of its own")
    arms = arms_of(None if challenger is None else (challenger.name, challenger.path),
                   traffic.challenger_percent, listed)
    for key, line, message in arm_problems(arms, None if champion is None else champion.name,
                                           r.lines):
        r.fail(key, line, message)

    shadow = r.record(root, "", "shadow", Shadow, {
        "sample_percent": _number(0, 100), "queue_size": _integer(1),
        "timeout_ms": _number(above=0), "drain_s": _number(0, 3600)})

    analysis_node = root.get("analysis") if isinstance(root.get("analysis"), CommentedMap) \
        else CommentedMap()
    guardrails = r.record(analysis_node, "analysis", "guardrails", Guardrails, {
        "p99_latency_ms": _number(above=0), "error_rate": _number(0, 1)})
    analysis = r.record(root, "", "analysis", Analysis, {
        "metric": _choice(*METRICS), "alpha": _number(above=0, below=1),
        "min_effect": _number(above=0), "min_samples": _integer(1), "segments": _segments},
        guardrails=guardrails)

    rollout = None
    rollout_keys = ("steps", "interval_s", "auto_promote", "auto_rollback")
    if (node := r.section(root, "", "rollout", rollout_keys)) is not None:
        from_shadow, steps = r.value(node, "rollout", "steps", _rollout_steps,
                                     (False, ()), required=True)
        if mode == "shadow" and steps and not from_shadow:
            r.fail("rollout.steps", _value_line(node, "steps"),
                   "in shadow mode a rollout starts with shadow (steps: [shadow, 5, 25, 50]); "
                   "percentages alone would never move")
        if (step_problem := step_problems(steps, len(arms))) is not None:
            r.fail("rollout.steps", _value_line(node, "steps"), step_problem)
        rollout = Rollout(
            steps=steps,
            from_shadow=from_shadow,
            interval_s=r.value(node, "rollout", "interval_s", _number(above=0),
                               Rollout.interval_s),
            auto_promote=r.value(node, "rollout", "auto_promote", _boolean,
                                 Rollout.auto_promote),
            auto_rollback=r.value(node, "rollout", "auto_rollback", _boolean,
                                  Rollout.auto_rollback),
        )

    store = r.value(root, "", "store", _store_url, DEFAULT_STORE)

    limits = r.record(root, "", "limits", Limits, {
        "max_body_bytes": _integer(1), "max_batch": _integer(1),
        "header_timeout_s": _number(0.1, 3600), "body_timeout_s": _number(0.1, 3600),
        "max_connections": _integer(1)})
    batching = r.record(root, "", "batching", Batching, {
        "max_batch": _integer(1), "max_wait_ms": _number(0, 1000)})
    monitoring = r.record(root, "", "monitoring", Monitoring, {
        "window": _integer(1), "interval_s": _number(0.1, 3600)})

    if r.problems or champion is None:
        raise ConfigError(source, r.problems)
    return RouterConfig(
        experiment=experiment, mode=mode, champion=champion, challenger=challenger,
        previous=previous, challengers=listed, traffic=traffic, shadow=shadow, analysis=analysis,
        rollout=rollout, store=store, limits=limits, batching=batching, model_roots=model_roots,
        monitoring=monitoring, source=source, lines=r.lines,
    )


def load_config(path: str | Path, *, base_dir: Path | None = None) -> RouterConfig:
    """Read and validate a YAML file; a missing or unreadable file is a ``ConfigError`` too."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, [ConfigProblem("", None, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [ConfigProblem("", None, f"cannot read: {exc}")]
                          ) from None
    return parse_config(text, source=source, base_dir=base_dir)
