"""One experiment across many gateways: the switchable keys travel through the shared store.

Each gateway reads its own YAML file, but a switch (promote, rollback, a rollout step) made
through any of them must reach all. The switchable keys (``mode``, ``champion``,
``challenger``, ``previous``, ``traffic.challenger_percent``, and ``challengers`` when the
file lists several) are therefore also published to
the store, with a timestamp, as the experiment's *switch state*. The rule is "latest wins":

- a gateway whose file is older than the store's switch state serves the state's keys over
  its file, and rewrites its file to match when it can (a read-only file, such as a
  Kubernetes ConfigMap, keeps serving the state as an overlay, shown in ``/config``);
- a gateway whose file is newer (someone edited it) publishes the file's keys, and the others
  follow within their poll interval.

So the YAML stays the source of truth wherever it can be written, the store carries switches
between machines, and a restart of every gateway serves the latest switch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from router.config import ModelRef, RouterConfig
from router.config.challengers import ListedChallenger
from router.outcomes import ExperimentState, SwitchState


def switchable(config: RouterConfig) -> dict[str, Any]:
    """The keys a switch may change, as JSON-native data with absolute model paths."""
    def ref(model: ModelRef | None) -> dict[str, str] | None:
        return None if model is None else {"name": model.name, "path": str(model.path)}

    state: dict[str, Any] = {"mode": config.mode, "champion": ref(config.champion),
                             "challenger": ref(config.challenger),
                             "previous": ref(config.previous),
                             "challenger_percent": config.traffic.challenger_percent}
    if config.challengers:  # absent with one challenger: its state is what it always was
        state["challengers"] = [{"name": c.name, "path": str(c.path), "percent": c.percent}
                                for c in config.challengers]
    return state


def apply_state(config: RouterConfig, state: dict[str, Any]) -> RouterConfig:
    """``config`` with its switchable keys taken from a published state."""
    def ref(value: dict[str, str] | None) -> ModelRef | None:
        return None if value is None else ModelRef(value["name"], Path(value["path"]))

    champion = ref(state["champion"])
    assert champion is not None, "a switch state always names a champion"
    traffic = dataclasses.replace(config.traffic,
                                  challenger_percent=float(state["challenger_percent"]))
    listed = tuple(ListedChallenger(c["name"], Path(c["path"]), float(c["percent"]))
                   for c in state.get("challengers") or ())
    return dataclasses.replace(config, mode=state["mode"], champion=champion,
                               challenger=ref(state["challenger"]),
                               previous=ref(state["previous"]), challengers=listed,
                               traffic=traffic)


@dataclasses.dataclass(frozen=True)
class Resolved:
    """The configuration to serve and where its switchable keys came from."""

    config: RouterConfig
    state: SwitchState
    from_store: bool  # the store's state is newer than the file: served over it


def resolve(config: RouterConfig, file_mtime: float, store: ExperimentState) -> Resolved:
    """Latest wins between the file (by its mtime) and the store's switch state."""
    mine = switchable(config)
    state = store.switch_state(config.experiment)
    if state is not None and state.state == mine:
        return Resolved(config, state, from_store=False)
    if state is not None and state.ts > file_mtime:
        return Resolved(apply_state(config, state.state), state, from_store=True)
    generation = store.publish_switch_state(config.experiment, mine, file_mtime)
    return Resolved(config, SwitchState(config.experiment, generation, file_mtime, mine),
                    from_store=False)
