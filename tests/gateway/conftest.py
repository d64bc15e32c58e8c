"""The in-process gateway of a module's ``config_file`` fixture (TestClient runs the lifespan)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from router.gateway import create_app


@pytest.fixture
def client(config_file: Path) -> Iterator[TestClient]:
    with TestClient(create_app(config_file, base_dir=config_file.parent)) as test_client:
        yield test_client
