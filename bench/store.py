"""Write throughput of the outcome stores: records per second, SQLite against PostgreSQL.

    .venv/bin/python -m bench.store [--records 200000] [--postgres URL]

Writes the same records through ``OutcomeWriter`` (the gateway's path: batches of up to
5,000 in one transaction; COPY on PostgreSQL) into a fresh SQLite file and a fresh
PostgreSQL database, and writes ``bench/store-results.md``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from router.outcomes import OutcomeStore, OutcomeWriter, PredictionRecord, open_store

RESULTS = Path(__file__).resolve().parent / "store-results.md"


def records(count: int) -> list[PredictionRecord]:
    return [PredictionRecord(
        request_id=f"r{i}", ts=1_700_000_000 + i * 1e-3, experiment="bench", revision=1,
        variant="challenger" if i % 2 else "champion", model="m", version="1",
        features=tuple(float(i % 97 + j) for j in range(30)), prediction="benign",
        probability=0.9, latency_ms=1.2, unit_id=f"u{i % 5000}",
        probabilities={"benign": 0.9, "malignant": 0.1}) for i in range(count)]


def measure(store: OutcomeStore, batch: list[PredictionRecord], chunk: int = 64) -> float:
    """Records per second from the first submit until the writer has written them all."""
    writer = OutcomeWriter(store, max_pending=len(batch) + 1)
    writer.start()
    started = time.perf_counter()
    for i in range(0, len(batch), chunk):  # as requests hand them over
        writer.submit_predictions(batch[i:i + chunk])
    writer.flush(timeout=600)
    elapsed = time.perf_counter() - started
    writer.close()
    store.close()
    return len(batch) / elapsed


def postgres_database(admin_url: str) -> str:
    import psycopg

    name = f"router_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def drop_database(admin_url: str, url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="admin URL; a fresh database is created and dropped")
    args = parser.parse_args()
    batch = records(args.records)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        sqlite = measure(open_store("sqlite:///outcomes.db", Path(directory)), batch)
        rows.append(("SQLite (WAL, one file)", sqlite))
    url = postgres_database(args.postgres)
    try:
        rows.append(("PostgreSQL (COPY)", measure(open_store(url, Path.cwd()), batch)))
    finally:
        drop_database(args.postgres, url)
    lines = ["# Outcome store write throughput", "",
             f"{args.records:,} prediction records (30 features each), submitted 64 at a time "
             "through `OutcomeWriter`, as the gateway does.", "",
             "| store | records/s | ratio to SQLite |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {rate:,.0f} | {rate / rows[0][1]:.2f}x |" for name, rate in rows]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
