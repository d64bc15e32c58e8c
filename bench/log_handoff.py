"""What logging costs the serving process, per record: the ways to hand records over, measured.

``.venv/bin/python -m bench.log_handoff`` (about three minutes). Three parts:

1. Packing a batch of records for another process, in CPU microseconds per record: pickling
   the named tuples, pickling them as plain tuples, orjson, and filling a numpy structured
   array (what shared memory would need).
2. A saturated serving loop, as at 64 connections: each "request" is about 30 µs of Python
   work and one record handed to the writer, for 3 s, into a SQLite file. The CPU time of
   this process (every thread) per request over the same loop without a writer, with the
   writer as a thread here (``OutcomeWriter``) and as a process of its own
   (``WriterProcess``, whose own CPU per record is shown beside); the median of five rounds,
   the variants interleaved, since a shared machine's noise is as large as the differences.
3. The writer process's own CPU per row, fed 20,000 rows a second for 5 s as the gateway feeds
   it: model calls' answers (``submit_batch``, 16 one-row requests a call), whose rows it makes
   straight from the arrays, against the same rows as records made here
   (``submit_predictions``), which it only turns into rows; the median of three interleaved
   rounds.

The records are the ones ``router serve`` logs for the iris forest in ``ab`` mode.
"""

from __future__ import annotations

import argparse
import pickle
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from router.outcomes import OutcomeWriter, PredictionRecord, open_store
from router.outcomes.answered import (
    AnsweredBatch,
    Asked,
    ModelTag,
    answered_batch,
    records_of_batch,
)
from router.outcomes.writer_process import WriterProcess

SECONDS = 3.0
ROUNDS = 5
FEED_SECONDS, FEED_ROWS_PER_S, FEED_CALL_ROWS, FEED_ROUNDS = 5.0, 20_000, 16, 3
CLASSES = ("setosa", "versicolor", "virginica")
TAG = ModelTag("bench-ab", 1, "champion", "iris-rf", "1", CLASSES)
PACK_BATCH = 200  # records handed over per 20 ms at 10,000 records/s


def record(i: int) -> PredictionRecord:
    return PredictionRecord(
        f"0190f3a2-7b1c-7000-8000-{i:012d}", time.time(), "bench-ab", 1, "champion", "iris-rf",
        "1", (5.1, 3.5, 1.4, 0.2), "setosa", 0.97, 1.234, False, str(i % 1000),
        {"setosa": 0.97, "versicolor": 0.02, "virginica": 0.01}, None, False, False)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def per_record_us(pack: Callable[[list[PredictionRecord]], Any], records: list[PredictionRecord],
                  repeat: int = 400) -> float:
    started = cpu_seconds()
    for _ in range(repeat):
        pack(records)
    return (cpu_seconds() - started) / (repeat * len(records)) * 1e6


_NUMPY_ROW = np.dtype([("request_id", "U36"), ("ts", "f8"), ("experiment", "U32"),
                       ("revision", "i8"), ("variant", "U10"), ("model", "U32"),
                       ("version", "U16"), ("features", "f8", 4), ("prediction", "U32"),
                       ("probability", "f8"), ("latency_ms", "f8"), ("unit_id", "U36"),
                       ("probabilities", "f8", 3)])


def numpy_rows(records: list[PredictionRecord]) -> bytes:
    rows = np.empty(len(records), _NUMPY_ROW)
    for i, r in enumerate(records):
        rows[i] = (r.request_id, r.ts, r.experiment, r.revision, r.variant, r.model, r.version,
                   r.features, r.prediction, r.probability, r.latency_ms, r.unit_id,
                   tuple(r.probabilities.values()) if r.probabilities else (0.0, 0.0, 0.0))
    return rows.tobytes()


def packing() -> list[tuple[str, float]]:
    records = [record(i) for i in range(PACK_BATCH)]
    return [
        ("pickle, named tuples", per_record_us(lambda b: pickle.dumps(b, 5), records)),
        ("pickle, plain tuples (map(tuple) included)",
         per_record_us(lambda b: pickle.dumps(list(map(tuple, b)), 5), records)),
        ("orjson, plain tuples (map(tuple) included)",
         per_record_us(lambda b: orjson.dumps(list(map(tuple, b))), records)),
        ("numpy structured array (shared memory's layout)", per_record_us(numpy_rows, records)),
    ]


def busy_request() -> int:
    """About 30 µs of Python, standing for the rest of a request's work."""
    total = 0
    for i in range(800):
        total += i * i
    return total


def saturated_log(make: Callable[[Path], Any], base: Path) -> tuple[float, float | None]:
    """(CPU µs per request of this process, of the writer process per record or None)."""
    writer = make(base)
    n = 0
    started_cpu, started = cpu_seconds(), time.perf_counter()
    while time.perf_counter() - started < SECONDS:
        busy_request()
        writer.submit_predictions([record(n)])
        n += 1
    mine = (cpu_seconds() - started_cpu) / n * 1e6
    pid = getattr(writer, "pid", None)
    assert writer.flush(120)
    child = _process_cpu(pid)
    writer.close(timeout=60)
    if isinstance(writer, OutcomeWriter):
        writer._store.close()
    return mine, None if child is None else child / n * 1e6


def model_call(rng: np.random.Generator, first: int) -> AnsweredBatch:
    """One call's answer as the batcher hands it over: 16 one-row requests."""
    features = rng.random((FEED_CALL_ROWS, 4)) * 7
    probabilities = rng.dirichlet(np.ones(3), FEED_CALL_ROWS)
    labels = [CLASSES[i] for i in probabilities.argmax(axis=1)]
    now = time.perf_counter()
    asked: list[Asked] = [
        (TAG, [f"0190f3a2-7b1c-7000-8000-{first + i:012d}"], str((first + i) % 1000), None,
         False, False, now - 0.001) for i in range(FEED_CALL_ROWS)]
    return answered_batch(time.time(), now, features, labels, probabilities, asked)


def writer_process_rows(as_records: bool, base: Path) -> float:
    """The writer process's CPU µs per row, fed model calls' answers (or their records)."""
    writer = _started(WriterProcess("sqlite:///log.db", base))
    before = _process_cpu(writer.pid) or 0.0
    rng = np.random.default_rng(0)
    rows, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < FEED_SECONDS:
        if rows > elapsed * FEED_ROWS_PER_S:
            time.sleep(0.0005)
            continue
        call = model_call(rng, rows)
        if as_records:
            writer.submit_predictions(records_of_batch(call))
        else:
            writer.submit_batch(call)
        rows += FEED_CALL_ROWS
    assert writer.flush(120)
    spent = (_process_cpu(writer.pid) or 0.0) - before
    writer.close(timeout=60)
    return spent / rows * 1e6


def _process_cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m bench.log_handoff",
                            description=__doc__.split("\n\n")[0]).parse_args(argv)
    print(f"packing a batch of {PACK_BATCH} records, CPU µs per record:")
    for name, us in packing():
        print(f"  {name:52s} {us:6.2f}")
    print(f"\na saturated serving loop logging into SQLite, {SECONDS:g} s, median of {ROUNDS} "
          "rounds, CPU µs per request:")
    url = "sqlite:///log.db"
    makers: dict[str, Callable[[Path], Any]] = {
        "no writer": lambda base: _NoWriter(),
        "writer thread in this process": lambda base: _started(OutcomeWriter(
            open_store(url, base))),
        "writer process": lambda base: _started(WriterProcess(url, base)),
    }
    mine: dict[str, list[float]] = {name: [] for name in makers}
    child: list[float] = []
    for _ in range(ROUNDS):
        for name, make in makers.items():
            with tempfile.TemporaryDirectory(prefix="router-log-") as tmp:
                cost, other = saturated_log(make, Path(tmp))
            mine[name].append(cost)
            if other is not None:
                child.append(other)
    base = statistics.median(mine["no writer"])
    for name, costs in mine.items():
        extra = "" if name == "no writer" else f" (+{statistics.median(costs) - base:.2f})"
        print(f"  {name:30s} this process {statistics.median(costs):6.2f}{extra}")
    print(f"  the writer process itself: {statistics.median(child):.2f} per record")
    print(f"\nthe writer process fed {FEED_ROWS_PER_S:,} rows/s for {FEED_SECONDS:g} s, median of "
          f"{FEED_ROUNDS} rounds, its CPU µs per row:")
    fed: dict[bool, list[float]] = {False: [], True: []}  # as records?
    for _ in range(FEED_ROUNDS):
        for as_records, costs in fed.items():
            with tempfile.TemporaryDirectory(prefix="router-log-") as tmp:
                costs.append(writer_process_rows(as_records, Path(tmp)))
    for as_records, costs in fed.items():
        name = "the same rows as records (submit_predictions)" if as_records \
            else "model calls' answers (submit_batch)"
        print(f"  {name:48s} {statistics.median(costs):6.2f}  "
              f"({', '.join(f'{c:.2f}' for c in costs)})")
    return 0


class _NoWriter:
    """What the loop costs without a writer: the baseline to subtract."""

    def submit_predictions(self, records: list[PredictionRecord]) -> None:
        pass

    def flush(self, timeout: float) -> bool:
        return True

    def close(self, timeout: float) -> None:
        pass


def _started(writer: Any) -> Any:
    writer.start()
    return writer


if __name__ == "__main__":
    raise SystemExit(main())
