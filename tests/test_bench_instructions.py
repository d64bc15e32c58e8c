"""The instruction-count harness (``bench/instructions.py``) without valgrind: the real gateway
behind the real connection protocol answers every round over in-memory connections, and the
dumps' per-thread totals are read as callgrind writes them."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bench.instructions import serve_rounds, thread_totals
from bench.serving import prepare


def test_the_gateway_answers_each_round_over_in_memory_connections(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTER_ENGINE", "sklearn")  # no wait for ONNX Runtime's parity check
    prepare(tmp_path)
    rounds = asyncio.run(serve_rounds(tmp_path, "ab", [5, 200], tune_gc=False))
    assert [r["requests"] for r in rounds] == [5, 200]
    assert rounds[-1]["engines"] == {"champion": "scikit-learn", "challenger": "scikit-learn"}
    assert all(r["event_loop_cpu_us"] > 0 for r in rounds)
    # Every answer was a 200 (the harness raises otherwise) and every one was logged.
    with sqlite3.connect(tmp_path / "var" / "ab.db") as db:
        (logged,) = db.execute("SELECT count(*) FROM predictions").fetchone()
    assert logged == 205


def test_instructions_are_summed_by_thread_across_dumps(tmp_path: Path) -> None:
    prefix = tmp_path / "callgrind-auto"
    for name, total in (("callgrind-auto.1-01", 900), ("callgrind-auto.1-02", 0),
                        ("callgrind-auto.1-03", 40), ("callgrind-auto-01", 100)):
        (tmp_path / name).write_text(f"events: Ir\nsummary: 0\n\ntotals: {total}\n")
    assert thread_totals(prefix) == {1: 1000, 3: 40}
