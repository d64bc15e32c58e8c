"""Writing YAML configs for tests: SPEC.md's keys, with only what a test changes spelled out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def write_config(directory: Path, *, champion: Path, challenger: Path | None = None,
                 mode: str = "ab", experiment: str = "exp", store: str = "memory://",
                 name: str = "router.yaml", **sections: dict[str, Any]) -> Path:
    """A YAML file (JSON is YAML) naming the two models; extra sections go in as given."""
    config: dict[str, Any] = {
        "experiment": experiment,
        "mode": mode,
        "champion": {"name": "champ", "path": str(champion)},
        "store": store,
    }
    if challenger is not None:
        config["challenger"] = {"name": "chall", "path": str(challenger)}
    config.update(sections)
    path = directory / name
    path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
    return path
