"""The outcome log's cap through the app: once 100,000 records wait (the store down and
spilling failed too), every route that logs refuses new work with 503 overloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from router.errors import StoreError
from router.gateway.state import SPILL_DIR_ENV, GatewayState
from tests.gateway.test_app import named_row, state

CAP = 100_000  # the writer's max_pending: records waiting in memory before requests are refused


def refuse(*_args: Any) -> None:
    raise StoreError("store 'memory://': connection refused")


def test_feedback_is_refused_like_predictions_once_the_log_is_full(
        make_client: Any, champion_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by probing: with the store down and spilling impossible, /feedback answered 202
    past the cap while /predict answered 503, and the backlog grew to millions. Both now give
    the same 503 overloaded (with Retry-After), and what was accepted is written once the
    store is back."""
    not_a_directory = tmp_path / "spill-here"
    not_a_directory.write_text("")  # spilling fails: no directory can be made there
    monkeypatch.setenv(SPILL_DIR_ENV, str(not_a_directory))
    client = make_client(champion=champion_dir, mode="single",
                         limits={"max_batch": CAP, "max_body_bytes": 64 * CAP})
    gateway: GatewayState = state(client)
    store = gateway.store
    with monkeypatch.context() as outage:
        for write in ("write_predictions", "write_feedback"):
            outage.setattr(store, write, refuse)
        outage.setattr(store, "ping", lambda: False)

        full = client.post("/feedback", json={"feedback": [
            {"request_id": f"f{i}", "label": "setosa"} for i in range(CAP)]})
        assert full.status_code == 202 and gateway.writer.backlog == CAP
        assert not gateway.writer.accepting

        feedback = client.post("/feedback", json={"request_id": "late", "label": "setosa"})
        predict = client.post("/predict", json={"features": named_row(champion_dir)})
        assert feedback.status_code == predict.status_code == 503, feedback.text
        assert feedback.json()["error"] == predict.json()["error"] == "overloaded"
        assert feedback.headers["retry-after"] == predict.headers["retry-after"] == "1"
        assert gateway.writer.backlog == CAP

    assert gateway.writer.flush()
    assert len(store.feedback_records()) == CAP
    assert client.post("/feedback", json={"request_id": "after", "label": "setosa"}
                       ).status_code == 202
