"""The gateway several end-to-end modules share: ab mode, a real SQLite file, admin enabled."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.configs import write_config
from tests.e2e.server import Server, serve


@pytest.fixture(scope="module")
def ab_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              champion_dir: Path, challenger_dir: Path) -> Iterator[Server]:
    """``router serve`` in ab mode at 50 %, units by ``body:user_id``, a real SQLite file, and
    the admin routes enabled; the module using it names its ``EXPERIMENT`` and
    ``ADMIN_TOKEN``."""
    experiment, token = request.module.EXPERIMENT, request.module.ADMIN_TOKEN
    directory = tmp_path_factory.mktemp(experiment)
    config = write_config(directory, champion=champion_dir, challenger=challenger_dir,
                          experiment=experiment, store="sqlite:///outcomes.db",
                          traffic={"challenger_percent": 50, "sticky_key": "body:user_id"})
    with serve(config, directory, extra_env={"ROUTER_ADMIN_TOKEN": token}) as running:
        yield running
