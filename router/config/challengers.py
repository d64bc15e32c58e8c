"""Several challengers: the YAML's ``challengers:`` list, and the arms it makes with
``challenger:``.

An *arm* is a challenger as assignment, serving and the statistics see it. ``challenger:`` (with
``traffic.challenger_percent``) is served under the role ``challenger``, as it always was; each
entry of ``challengers:`` (``{name, path, percent}``) under its own name, which is what
``X-Variant``, the outcome log and ``/stats`` call it. The arms come in that order, the order
that lays out their buckets (``router.serving.assignment``): each owns a fixed region, so its
share can be at most the region's size, and the shares together at most 100 %.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from router.config.read import (
    _Invalid,
    _key_line,
    _kind,
    _line,
    _number,
    _Reader,
    _text,
    _value_line,
)
from router.serving.assignment import challenger_buckets, region_capacity

__all__ = ["RESERVED_NAMES", "Arm", "ListedChallenger", "arm_named", "arm_problems", "arms_of",
           "describe_challengers", "read_challengers", "step_problems"]

# The roles a variant may be named by (the override header, /v2/models/{name}): no listed
# challenger may take one of them as its name.
RESERVED_NAMES = ("champion", "challenger", "previous")
_KEYS = ("name", "path", "percent")
# A variant name travels in X-Variant, metrics labels and the statistics' queries: plain
# characters only, which no header, label or SQL string literal needs to escape.
_NAME = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ListedChallenger:
    """One entry of ``challengers:``: served under ``name``, ``percent`` of units in ab mode."""

    name: str
    path: Path
    percent: float = 0.0


@dataclass(frozen=True)
class Arm:
    """One challenger in bucket order.

    Attributes:
        variant: what it is served and logged as: ``challenger`` for ``challenger:``, else its
            name.
        name, path: the model, as the YAML names it.
        percent: its share of units in ab mode.
        key: where the YAML sets it (``challenger``, ``challengers[1]``), for messages.
    """

    variant: str
    name: str
    path: Path
    percent: float
    key: str


def arms_of(challenger: tuple[str, Path] | None, challenger_percent: float,
            listed: Sequence[ListedChallenger]) -> tuple[Arm, ...]:
    """The arms in bucket order: ``challenger:`` (its ``name, path``) first, then the list."""
    first = () if challenger is None else (
        Arm("challenger", *challenger, challenger_percent, "challenger"),)
    return (*first, *(Arm(c.name, c.name, c.path, c.percent, f"challengers[{i}]")
                      for i, c in enumerate(listed)))


def arm_named(arms: Sequence[Arm], named: str) -> Arm | None:
    """The arm a switch's ``challenger`` names: by its variant or by its model's name."""
    return next((arm for arm in arms if named in (arm.variant, arm.name)), None)


def describe_challengers(arms: Sequence[Arm]) -> str:
    """The challengers as a message lists them to a person, by model name: ``gb, svc
    (challengers)``, ``breast-cancer-rf (challenger)``, or ``no challenger``."""
    if not arms:
        return "no challenger"
    names = ", ".join(arm.name for arm in arms)
    return f"{names} ({'challenger' if len(arms) == 1 else 'challengers'})"


def _name(value: Any) -> str:
    name = _text(value)
    if not _NAME.fullmatch(name):
        raise _Invalid(f"{name!r} is not a variant name: letters, digits, '.', '_' and '-' only "
                       "(it is sent in the X-Variant header and used as a metrics label)")
    if name.lower() in RESERVED_NAMES:
        raise _Invalid(f"{name!r} is the name of a role ({', '.join(RESERVED_NAMES)}); "
                       "give the challenger a name of its own")
    return name


def read_challengers(r: _Reader, root: CommentedMap, resolve: Callable[[CommentedMap, str, str],
                                                                       Path]
                     ) -> tuple[ListedChallenger, ...]:
    """The ``challengers:`` list, each fault reported on ``r``; ``resolve(node, key, path)``
    makes a model path absolute (and checks it against ``model_roots``)."""
    if "challengers" not in root or root["challengers"] is None:
        return ()
    node = root["challengers"]
    r.lines["challengers"] = _key_line(root, "challengers") or 0
    if not isinstance(node, CommentedSeq) or not node:
        r.fail("challengers", _value_line(root, "challengers"),
               f"must be a list of {{name, path, percent}}, got {_kind(node)}")
        return ()
    listed = []
    for index, item in enumerate(node):
        key = f"challengers[{index}]"
        line = _line(node.lc.item(index))
        if not isinstance(item, CommentedMap):
            r.fail(key, line, f"must be a mapping {{name, path, percent}}, got {_kind(item)}")
            continue
        r.lines[key] = line or 0
        for unknown in (k for k in item if k not in _KEYS):
            r.fail(f"{key}.{unknown}", _line(item.lc.key(unknown)),
                   f"unknown key (allowed: {', '.join(_KEYS)})")
        name = r.value(item, key, "name", _name, required=True)
        path = r.value(item, key, "path", _text, required=True)
        percent = r.value(item, key, "percent", _number(0, 100), 0.0)
        if name is not None and path is not None:
            listed.append(ListedChallenger(name, resolve(item, key, path), percent))
    return tuple(listed)


def arm_problems(arms: Sequence[Arm], champion: str | None, lines: dict[str, int]
                 ) -> list[tuple[str, int | None, str]]:
    """``(key, line, message)`` for each listed challenger's name taken twice and each share
    over its region. (``challenger:`` may share the champion's name, as it always could: a
    new version of the same model.)"""
    problems: list[tuple[str, int | None, str]] = []
    taken = {champion: "the champion"} if champion is not None else {}
    for arm in arms:
        if arm.name in taken and arm.variant != "challenger":
            key = f"{arm.key}.name"
            problems.append((key, lines.get(key), f"{arm.name!r} already names "
                             f"{taken[arm.name]}; every variant needs a name of its own"))
        taken.setdefault(arm.name, "the challenger" if arm.variant == "challenger"
                         else f"challenger {arm.key}")
    for index, arm in enumerate(arms):
        capacity = region_capacity(index, len(arms))
        if challenger_buckets(arm.percent) > challenger_buckets(capacity):
            key = "traffic.challenger_percent" if arm.variant == "challenger" \
                else f"{arm.key}.percent"
            problems.append((key, lines.get(key), f"{arm.percent:g} is over its region: "
                             + _at_most(capacity, len(arms))))
    return problems


def _at_most(capacity: float, arms: int) -> str:
    return (f"at most {capacity:g} with {arms} challengers, which split the buckets into equal "
            "fixed regions so that raising one share never moves another challenger's users "
            "(the shares together stay within 100)")


def step_problems(steps: Sequence[float], arms: int) -> str | None:
    """Why rollout ``steps`` cannot be served by any of ``arms`` challengers, or None."""
    if arms < 2:
        return None
    capacity = min(region_capacity(i, arms) for i in range(arms))
    over = [step for step in steps if challenger_buckets(step) > challenger_buckets(capacity)]
    if not over:
        return None
    return f"{over[0]:g} is over a challenger's region: " + _at_most(capacity, arms)
