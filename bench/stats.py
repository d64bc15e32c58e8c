"""Benchmark of ``/stats``: the report computed from a store of 10k, 100k and 1M outcomes, on
SQLite and on PostgreSQL.

Run from the repository root: ``.venv/bin/python bench/stats.py`` (a few minutes the first
time, most of it writing the stores; ``--dir`` keeps the SQLite files for the next run and
``--keep`` the PostgreSQL databases). ``--postgres ADMIN_URL`` names the server (default: the
local one, ``postgresql://postgres@127.0.0.1:5432/postgres``); each size gets a database of its
own, ``router_bench_stats_<N>``; ``--stores sqlite`` leaves PostgreSQL out.

Each store holds an ``ab`` experiment at 50 % with a sticky key: N logged predictions from
N/5 users (latencies drawn from a gamma distribution), 95 % of them labelled, 1 % of those
labelled twice (the correction is the one joined), and a few labels for unknown request ids.
What is timed is what ``GET /stats`` runs off the event loop, ``compute_report``: the phase
from the revisions, ``analysis_columns`` (the SQL join and the transfer to numpy), every
statistic, drift and the decision. Each size is timed ``--repeat`` times each way after one
warm-up call (the file in the page cache, as on a gateway that answers ``/stats`` repeatedly):
cold, on a store opened for the call, which reads the whole phase; and live, on one store
after each of ``--repeat`` batches of 1,000 more logged predictions (removed again at the end,
PostgreSQL's id sequences set back with them), which on SQLite and PostgreSQL alike reads only
the rows and the feedback logged since its last read. The table gives wall times (median and
fastest), the CPU time of the process (every thread) and the CPU time per row, which stays
flat when the cost grows linearly.

The targets: at 1M predictions on PostgreSQL, a live ``/stats`` within 1 s and a cold one
within 2 s (medians). The output and the results page say whether each metric met them, with
the machine's load average and CPU pressure at the start and the end of the run: the wall
times include any wait for a core that other work holds. Results go to
``bench/stats-results.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.datasets import load_iris
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

# This checkout's router, whatever the environment has installed (run as bench/stats.py, the
# script's own directory, not the repository, is first on the path).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router.artifacts import save_model
from router.config import load_config
from router.outcomes import FeedbackRecord, OutcomeStore, PredictionRecord, open_store
from router.serving.registry import ModelRegistry
from router.serving.snapshot import config_digest, load_models
from router.stats.loader import compute_report

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
CLASSES = ("setosa", "versicolor", "virginica")
RESULTS = Path(__file__).with_name("stats-results.md")
CHUNK = 50_000
NEW_ROWS = 1_000  # logged between two live calls
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# The targets (median wall times): at TARGET_ROWS predictions on PostgreSQL, live and cold.
TARGET_ROWS = 1_000_000
TARGET_LIVE_S = 1.0
TARGET_COLD_S = 2.0


def models(root: Path) -> tuple[Path, Path]:
    data = load_iris()
    X, y = data.data, np.asarray(data.target_names)[data.target]
    dirs = []
    for name, final in (("iris-rf", RandomForestClassifier(n_estimators=10, random_state=0)),
                        ("iris-gb", GradientBoostingClassifier(n_estimators=20, max_depth=2,
                                                               random_state=0))):
        directory = root / "models" / name / "1"
        if not (directory / "metadata.json").exists():
            model = Pipeline([("scale", StandardScaler()), ("model", final)]).fit(X, y)
            save_model(model, directory, name=name, version="1", X_train=X, y_train=y,
                       feature_names=FEATURES, overwrite=True)
        dirs.append(directory)
    return dirs[0], dirs[1]


def store_url(root: Path, backend: str, n: int, admin_url: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{root / f'stats-{n}.db'}"
    return f"{admin_url.rsplit('/', 1)[0]}/router_bench_stats_{n}"


def create_database(admin_url: str, url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        name = url.rsplit("/", 1)[1]
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(admin_url: str, url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def write_config(root: Path, n: int, champion: Path, challenger: Path, url: str,
                 backend: str) -> Path:
    path = root / f"router-{backend}-{n}.yaml"
    path.write_text(
        f"experiment: bench\nmode: ab\n"
        f"champion: {{name: iris-rf, path: {champion}}}\n"
        f"challenger: {{name: iris-gb, path: {challenger}}}\n"
        "traffic: {challenger_percent: 50, sticky_key: header:x-user-id}\n"
        f"store: {url}\n")
    return path


def fill(store: OutcomeStore, n: int, revision: int, *, seed: int = 0, first: int = 0,
         prefix: str = "r", users_of: int | None = None) -> None:
    """n predictions of 3 classes from n/5 users (of ``users_of``/5 when given), 95 %
    labelled, with request ids ``<prefix><first>`` onwards; written in chunks."""
    rng = np.random.default_rng(seed)
    data = load_iris()
    t0 = 1_700_000_000.0
    population = max(1, (users_of or n) // 5)
    for start in range(first, first + n, CHUNK):
        m = min(CHUNK, first + n - start)
        users = rng.integers(0, population, m)
        challenger = users % 2 == 1
        picks = rng.integers(0, len(data.data), m)
        rows = (data.data[picks] + rng.normal(0, 0.2, (m, 4))).round(2)
        truth = data.target[picks]
        right = rng.random(m) < np.where(challenger, 0.93, 0.92)
        predicted = np.where(right, truth, (truth + 1) % 3)
        probabilities = rng.dirichlet([1, 1, 1], m)
        probabilities[np.arange(m), predicted] += 2.0
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        latency = rng.gamma(2.0, 0.3, m)
        store.write_predictions([
            PredictionRecord(
                request_id=f"{prefix}{start + i}", ts=t0 + (start + i) * 0.01,
                experiment="bench",
                revision=revision, variant="challenger" if challenger[i] else "champion",
                model="iris-gb" if challenger[i] else "iris-rf", version="1",
                features=tuple(rows[i].tolist()), prediction=CLASSES[predicted[i]],
                probability=float(probabilities[i, predicted[i]]),
                latency_ms=float(latency[i]), unit_id=f"user-{users[i]}",
                probabilities=dict(zip(CLASSES, probabilities[i].tolist(), strict=True)))
            for i in range(m)])
        labelled = np.flatnonzero(rng.random(m) < 0.95)
        twice = labelled[rng.random(labelled.size) < 0.01]
        store.write_feedback(
            [FeedbackRecord(f"{prefix}{start + i}", t0 + (start + i) * 0.01 + 60,
                            label=CLASSES[(truth[i] + 2) % 3]) for i in twice]
            + [FeedbackRecord(f"{prefix}{start + i}", t0 + (start + i) * 0.01 + 90,
                              label=CLASSES[truth[i]]) for i in labelled]
            + [FeedbackRecord(f"{prefix}ghost-{start}-{k}", t0, label="setosa")
               for k in range(3)])


def prepare(root: Path, n: int, champion: Path, challenger: Path, backend: str,
            admin_url: str) -> Path:
    """The config of a store holding ``n`` predictions, written unless a kept one has them."""
    url = store_url(root, backend, n, admin_url)
    config_path = write_config(root, n, champion, challenger, url, backend)
    config = load_config(config_path, base_dir=root)
    if backend == "postgres":
        create_database(admin_url, url)
    store = open_store(url, root)
    ready = store.count_predictions() == n
    store.close()
    if ready:
        return config_path
    if backend == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{root / f'stats-{n}.db'}{suffix}").unlink(missing_ok=True)
    else:
        drop_database(admin_url, url)
        create_database(admin_url, url)
    started = time.perf_counter()
    store = open_store(url, root)
    revision = store.register_revision("bench", config_digest(
        config, load_models(config, ModelRegistry())), config.to_dict(), time.time())
    fill(store, n, revision)
    store.close()
    if backend == "postgres":
        # The planner's statistics, as autovacuum gathers them on a live database soon after
        # a load like this one; without them it plans the join for an empty table.
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
    print(f"  wrote {n:,} predictions in {time.perf_counter() - started:.0f} s", flush=True)
    return config_path


Timings = tuple[list[float], list[float], list[float]]  # wall, CPU, calling thread's CPU


def _timed_call(call: Callable[[], dict[str, object]], into: Timings) -> dict[str, object]:
    wall, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
    report = call()
    into[0].append(time.perf_counter() - wall)
    into[1].append(time.process_time() - cpu)
    into[2].append(time.thread_time() - main)
    return report


def trim(url: str, root: Path) -> None:
    """Delete what ``time_report`` added (request ids starting with ``x``), and on PostgreSQL
    set the id sequences back: ids left unused below the next run's rows would be ids a read
    looks for again (a write rolled back, for all it knows), which no gateway has many of."""
    statements = ("DELETE FROM predictions WHERE request_id LIKE 'x%'",
                  "DELETE FROM feedback WHERE request_id LIKE 'x%'")
    if url.startswith("sqlite:///"):
        with sqlite3.connect(root / url[len("sqlite:///"):]) as conn:
            for statement in statements:
                conn.execute(statement)
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
        for table in ("predictions", "feedback"):
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                         f"(SELECT max(id) FROM {table}))")


def time_report(config_path: Path, root: Path, repeat: int, metric: str | None, n: int
                ) -> tuple[Timings, Timings, dict[str, object]]:
    """``compute_report`` timed ``repeat`` times each way:

    - *cold*: on a store opened for the call, which reads the whole phase;
    - *live*: on one store that has answered before, after another ``NEW_ROWS`` predictions
      (with their feedback, as a few seconds of traffic bring) were logged, which is what a
      gateway answering ``/stats`` again and again does.
    """
    config = load_config(config_path, base_dir=root)
    served = load_models(config, ModelRegistry())
    trim(config.store, root)  # what an interrupted run left
    cold: Timings = ([], [], [])
    live: Timings = ([], [], [])
    warm_up = open_store(config.store, root)
    compute_report(warm_up, config, served, metric=metric)  # page cache, imports
    warm_up.close()
    for _ in range(repeat):
        store = open_store(config.store, root)
        try:
            report = _timed_call(lambda s=store: compute_report(s, config, served,
                                                                metric=metric), cold)
        finally:
            store.close()
    store = open_store(config.store, root)
    (revision,) = {r.revision for r in store.revisions("bench")}
    try:
        compute_report(store, config, served, metric=metric)
        for k in range(repeat):
            fill(store, NEW_ROWS, revision, seed=k + 1, first=k * NEW_ROWS, prefix="x",
                 users_of=n)
            report = _timed_call(lambda: compute_report(store, config, served, metric=metric),
                                 live)
    finally:
        store.close()
        trim(config.store, root)
    return cold, live, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="logged predictions per store, comma-separated")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per size")
    parser.add_argument("--dir", help="keep the SQLite stores here (default: a temporary "
                        "directory)")
    parser.add_argument("--stores", default="sqlite,postgres",
                        help="the stores to time, comma-separated (sqlite, postgres)")
    parser.add_argument("--postgres", default=POSTGRES_ADMIN, metavar="ADMIN_URL",
                        help="a PostgreSQL database to create the bench databases from")
    parser.add_argument("--keep", action="store_true",
                        help="keep the PostgreSQL databases for the next run")
    parser.add_argument("--metric", action="append", default=None,
                        help="analysis metric(s) to time (default accuracy and log_loss)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = [b.strip() for b in args.stores.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"--stores: unknown store {', '.join(sorted(unknown))}")
    metrics = args.metric or ["accuracy", "log_loss"]
    started = machine_load()
    rows = []
    with tempfile.TemporaryDirectory(prefix="router-bench-stats-") as scratch:
        root = Path(args.dir or scratch)
        root.mkdir(parents=True, exist_ok=True)
        champion, challenger = models(root)
        try:
            for backend in backends:
                for n in sizes:
                    print(f"{backend}, {n:,} predictions", flush=True)
                    config_path = prepare(root, n, champion, challenger, backend,
                                          args.postgres)
                    for metric in metrics:
                        rows.append(timed(backend, n, metric, config_path, root, args.repeat))
        finally:
            if "postgres" in backends and not args.keep:
                for n in sizes:
                    drop_database(args.postgres, store_url(root, "postgres", n, args.postgres))
    verdicts = judge(rows)
    for line in verdicts:
        print(line)
    write_results(rows, args.repeat, started, verdicts)
    return 0


def judge(rows: list[Row]) -> list[str]:
    """Whether each metric's PostgreSQL row at :data:`TARGET_ROWS` met the targets."""
    verdicts = []
    for backend, n, metric, median, _, _, _, live, _ in rows:
        if backend == "postgres" and n == TARGET_ROWS:
            met = live <= TARGET_LIVE_S and median <= TARGET_COLD_S
            verdicts.append(
                f"{metric}: live {live:.3f} s (target {TARGET_LIVE_S:g} s), cold {median:.3f} s "
                f"(target {TARGET_COLD_S:g} s): {'met' if met else 'MISSED'}")
    return verdicts


Row = tuple[str, int, str, float, float, float, float, float, float]


def timed(backend: str, n: int, metric: str, config_path: Path, root: Path, repeat: int) -> Row:
    cold, live, report = time_report(config_path, root, repeat, metric, n)
    variants = report["variants"]  # type: ignore[index]
    row = (backend, n, metric, statistics.median(cold[0]), min(cold[0]),
           statistics.median(cold[1]), statistics.median(cold[2]), statistics.median(live[0]),
           min(live[0]))
    print(f"  {metric:<9} cold: median {row[3]:.3f} s, best {row[4]:.3f} s, cpu {row[5]:.3f} s "
          f"(calling thread {row[6]:.3f} s); after {NEW_ROWS:,} more: median {row[7]:.3f} s, "
          f"best {row[8]:.3f} s; labelled {sum(v['labelled'] for v in variants.values()):,}",
          flush=True)
    return row


def cpu_pressure() -> str:
    """Linux's CPU pressure, the share of the last minute some runnable task waited for a core
    (other work on a shared machine shows up as wall time well above CPU time)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return "unknown"
    fields = dict(item.split("=") for item in line.split()[1:])
    return f"{float(fields.get('avg60', 'nan')):.0f} %"


def machine_load() -> str:
    """The load average of the last minute and the CPU pressure (see :func:`cpu_pressure`)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"load average {load:.1f} and CPU pressure {cpu_pressure()}"


def niceness() -> str:
    """This process's niceness, where the system has one: under ``nice`` it yields the CPU to
    other work, which shows in the wall times."""
    return f", niceness {os.nice(0)}" if hasattr(os, "nice") else ""


def write_results(rows: list[Row], repeat: int, started: str, verdicts: list[str]) -> None:
    targets = [
        f"Targets, at {TARGET_ROWS:,} predictions on PostgreSQL (medians): live within "
        f"{TARGET_LIVE_S:g} s, cold within {TARGET_COLD_S:g} s.", "",
        *[f"- {line}" for line in verdicts or ["not measured in this run"]], ""]
    lines = [
        "# `/stats` computation time (bench/stats.py)",
        "",
        "What `GET /stats` runs off the event loop (`compute_report`: the join of predictions "
        "with their latest feedback, the transfer to numpy, every statistic, drift and the "
        "decision) over a SQLite file and a PostgreSQL database holding the same `ab` "
        "experiment with a sticky key, 95 % of predictions labelled. Median and best of "
        f"{repeat} calls each way, after a warm-up:",
        "",
        "- *cold*: a store opened for the call, which reads the whole phase (the first "
        "`/stats` of a gateway, or `router stats --store`);",
        f"- *live*: one store that has answered before, after another {NEW_ROWS:,} "
        "predictions with their feedback were logged (a few seconds of traffic): what a "
        "gateway answering `/stats` again and again does. Both stores read only the rows and "
        "the feedback logged since their last read.",
        "",
        "CPU is this process's, every thread's (for PostgreSQL, the server's own work is not "
        "in it), and the calling thread's alone.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}{niceness()}; at the "
        "start of the "
        f"run, {started}; at the end, {machine_load()} (CPU pressure: the share of the last "
        "minute in which some task waited for a core).",
        "",
        *targets,
        "The SQLite log is read in rowid ranges on two connections at once while a third "
        "counts the unknown feedback ids; the calling thread reads one range, then runs the "
        "statistics. A full PostgreSQL read takes the predictions on one connection and the "
        "feedback and the drift features on another, in one snapshot, and joins them in numpy; "
        "a live one asks for the rows and the feedback of ids above those it has read (and "
        "for ids it saw missing, a write not yet committed, until their writer has ended). "
        "Wall time adds any wait for a core held by other work on the machine; PostgreSQL's "
        "server work is in the wall time alone.",
        "",
        "| store | predictions | metric | cold, median (s) | cold, best (s) "
        "| cold CPU, all threads (s) | cold CPU, calling thread (s) | cold CPU µs per row "
        "| live, median (s) | live, best (s) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {backend} | {n:,} | {metric} | {median:.3f} | {best:.3f} | {cpu:.3f} "
          f"| {main:.3f} | {cpu / n * 1e6:.2f} | {live:.3f} | {live_best:.3f} |"
          for backend, n, metric, median, best, cpu, main, live, live_best in rows],
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print(f"results written to {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
