"""The instruction-count harness (``bench/instructions.py``) without valgrind: the real gateway
behind the real connection protocol answers every round over in-memory connections, and the
dumps' per-thread totals are read as callgrind writes them."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bench.instructions import cache_options, misses_by_level, serve_rounds, thread_totals
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
    assert thread_totals(prefix) == {1: {"Ir": 1000}, 3: {"Ir": 40}}


def test_a_cache_simulation_s_events_are_summed_by_name(tmp_path: Path) -> None:
    prefix = tmp_path / "callgrind-auto"
    events = "Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw"
    for name, totals in (("callgrind-auto.1-01", "900 5 5 3 2 1 1 2 3"),
                         ("callgrind-auto-01", "100 5 5 1 1 1 0 0 1"),
                         ("callgrind-auto-02", "0 0 0 0 0 0 0 0 0")):
        (tmp_path / name).write_text(f"events: {events}\nsummary: 0\n\ntotals: {totals}\n")
    counts = thread_totals(prefix)
    assert counts == {1: {"Ir": 1000, "Dr": 10, "Dw": 10, "I1mr": 4, "D1mr": 3, "D1mw": 2,
                          "ILmr": 1, "DLmr": 2, "DLmw": 4}}
    # Every miss of the first level, then of the last level callgrind simulates.
    assert misses_by_level(counts[1]) == (9, 7)


def test_the_simulated_caches_are_the_cores_own(tmp_path: Path) -> None:
    """The last level simulated is the core's own (its L2 here), the one a second thread of
    the serving process shares and evicts; the L3 serves both cores."""
    for index, (level, kind, size, ways) in enumerate((
            ("1", "Data", "32K", "8"), ("1", "Instruction", "64K", "4"),
            ("2", "Unified", "1024K", "8"), ("3", "Unified", "32768K", "16"))):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size),
                            ("ways_of_associativity", ways), ("coherency_line_size", "64")):
            (folder / name).write_text(value + "\n")
    assert cache_options(tmp_path) == ["--I1=65536,4,64", "--D1=32768,8,64",
                                       "--LL=1048576,8,64"]
    assert cache_options(tmp_path / "missing") == []  # valgrind then reads the CPU itself
