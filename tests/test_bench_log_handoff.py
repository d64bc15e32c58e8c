"""The fast case of ``bench/log_handoff.py``'s third part: the writer process it measures writes
every row it is fed, as model calls' answers and as records alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import log_handoff
from router.outcomes import open_store


@pytest.mark.parametrize("as_records", [False, True])
def test_the_fed_writer_process_writes_every_row(tmp_path: Path, as_records: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_handoff, "FEED_SECONDS", 0.2)
    assert log_handoff.writer_process_rows(as_records, tmp_path) > 0
    store = open_store("sqlite:///log.db", tmp_path)
    try:
        written = store.prediction_records()
    finally:
        store.close()
    assert written and len(written) % log_handoff.FEED_CALL_ROWS == 0
    assert {r.prediction for r in written} <= set(log_handoff.CLASSES)
    assert len({r.request_id for r in written}) == len(written)
