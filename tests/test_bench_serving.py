"""The serving benchmark's report, from made-up points and profiles: its tables, the targets
it judges and how a profile's samples group into parts (``bench/serving.py``,
``bench/targets.py``, ``bench/profiles.py``). Nothing here measures anything."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from bench import profiles
from bench.serving import (
    Point,
    cpu_table,
    out_of_line,
    pairs_section,
    report_text,
    targets_table,
    thread_table,
)
from bench.targets import targets
from router.thread_names import name_native_thread


def point(server: str, connections: int = 64, *, rps: float = 1_000.0, p50_ms: float = 1.0,
          p99_ms: float = 5.0, cpu: float | None = 100.0,
          serving: float | None = 90.0) -> Point:
    return Point(server=server, connections=connections, seconds=15.0,
                 requests=int(rps * 15), rps=rps, p50_ms=p50_ms, p99_ms=p99_ms,
                 max_ms=p99_ms * 2, errors=0, cpu_us_per_request=cpu,
                 serving_cpu_us_per_request=serving)


CEILING = point("ceiling", rps=20_000, p99_ms=4.0, cpu=40.0, serving=40.0)
FAST = point("ab-fast", rps=12_500, p99_ms=10.0, cpu=80.0, serving=60.0)
FAST_NOLOG = point("ab-fast-nolog", rps=13_000, cpu=75.0, serving=57.0)
SKLEARN = point("ab-sklearn", rps=9_000, p99_ms=13.0, cpu=120.0, serving=100.0)
SKLEARN_NOLOG = point("ab-sklearn-nolog", rps=9_200, cpu=115.0, serving=96.0)
MLSERVER = point("mlserver", rps=200.0, cpu=5_000.0, serving=None)
MLSERVER_BATCH = point("mlserver-batch", rps=1_000.0, cpu=1_000.0, serving=None)
ONE_CONN = [point("ab-sklearn", 1, p50_ms=0.8), point("mlserver", 1, p50_ms=5.0),
            point("mlserver-batch", 1, p50_ms=6.0)]
RUN = [CEILING, FAST, FAST_NOLOG, SKLEARN, SKLEARN_NOLOG, MLSERVER, MLSERVER_BATCH, *ONE_CONN]


def judged(points: list[Point]) -> dict[str, tuple[str, bool | None]]:
    return {target: (measured, met) for target, measured, met in targets(points)}


def test_cpu_table_gives_each_point_its_ratio_to_the_ceilings_cpu() -> None:
    rows = cpu_table([CEILING, FAST, MLSERVER]).splitlines()
    assert rows[0].startswith("| server | conns | server CPU µs/req | x ceiling")
    assert rows[2].endswith("| 64 | 40.0 | 1.00 | 40.0 | 1.00 |")
    assert rows[3].endswith("| 64 | 80.0 | 2.00 | 60.0 | 1.50 |")
    # MLServer's main process does not serve: no serving figure, no ratio.
    assert rows[4].endswith("| 64 | 5,000.0 | 125.00 | - | - |")


def test_a_point_costlier_at_64_connections_than_at_16_is_named_out_of_line() -> None:
    """More connections put more requests in each turn of the loop: a server's CPU per request
    at 64 above its own at 16 by a quarter is the machine's, and the report says so."""
    points = [point("ceiling", 16, serving=82.7, cpu=82.7), point("ceiling", serving=118.8,
                                                                    cpu=118.8),
              point("ab-fast", 16, serving=147.5), point("ab-fast", serving=124.9),
              point("baseline", 16, cpu=22_000.0, serving=22_000.0),
              point("baseline", cpu=24_800.0, serving=24_800.0)]
    [line] = out_of_line(points)
    assert line.startswith("- bare Starlette, constant: 118.8 µs per request at 64 connections")
    assert "against 82.7 at 16 (1.44x)" in line
    assert out_of_line([CEILING, FAST]) == []  # no 16-connection points to compare
    text = report_text(points, {}, INFO, [])
    assert "Points out of line" in text and line in text
    assert "Points out of line" not in report_text(RUN, {}, INFO, [])


def test_cpu_table_without_a_ceiling_at_that_count_shows_no_ratio() -> None:
    row = cpu_table([point("ab-fast", 16, cpu=80.0, serving=60.0)]).splitlines()[2]
    assert row.endswith("| 16 | 80.0 | - | 60.0 | - |")


INFO = {"command": "python -m bench.serving", "date": "2026-01-01 00:00 UTC",
        "machine": {"cpu": "a cpu", "cores": "2", "python": "3.11", "versions": ""},
        "load_before": "0 0 0", "load_after": "0 0 0", "client": "wrk", "seconds": 15,
        "warmup": 3}


def test_the_report_leads_with_cpu_per_request_before_requests_per_second() -> None:
    text = report_text(RUN, {}, INFO, [])
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[:3] == ["## Server CPU per request", "## Requests per second and latency",
                            "## Targets"]
    assert "## Where the time goes" not in text


def test_every_target_of_the_round_is_judged_on_a_full_run() -> None:
    rows = judged(RUN)
    wanted = {
        "scikit-learn, ab + log, 64 conns: >= 8x MLServer's best adaptive batching": True,
        "scikit-learn, ab + log, 64 conns: >= 40x MLServer without batching": True,
        "scikit-learn, ab + log, 1 conn: p50 <= 1/5 of MLServer, no batching's": True,
        "ONNX Runtime, ab + log, 64 conns: >= 0.6x the ceiling's req/s": True,
        "ONNX Runtime, ab + log, 64 conns: serving process CPU per request <= 1.6x the "
        "ceiling's": True,
        "ONNX Runtime, ab, 64 conns: logging costs <= 5 % of throughput": True,
        "ONNX Runtime, ab, 64 conns: logging costs <= 5 µs of the serving process's CPU per "
        "request": True,
        "scikit-learn, ab, 64 conns: logging costs <= 5 % of throughput": True,
        "scikit-learn, ab, 64 conns: logging costs <= 5 µs of the serving process's CPU per "
        "request": True,
        "ONNX Runtime, ab + log, 64 conns: p99 <= 3x the ceiling's": True,
        "scikit-learn, ab + log, 64 conns: p99 <= 3x the ceiling's": False,
    }
    assert {target: rows[target][1] for target in wanted} == wanted
    assert rows["ONNX Runtime, ab + log, 64 conns: serving process CPU per request <= 1.6x the "
                "ceiling's"][0] == "1.50x (60 vs 40 µs)"


def test_targets_replaced_by_this_rounds_are_gone() -> None:
    names = " ".join(judged(RUN))
    assert ">= 4x MLServer" not in names
    assert "0.5x" not in names
    assert "<= 10 %" not in names


@pytest.mark.parametrize(("serving", "met"), [(64.0, True), (64.5, False)])
def test_the_onnx_cpu_target_is_at_most_1_6x_the_ceilings(serving: float, met: bool) -> None:
    rows = judged([CEILING, replace(FAST, serving_cpu_us_per_request=serving)])
    assert rows["ONNX Runtime, ab + log, 64 conns: serving process CPU per request <= 1.6x the "
                "ceiling's"][1] is met


@pytest.mark.parametrize("ceiling_cpu", [None, 0.0])
def test_the_onnx_cpu_target_is_left_out_when_the_ceilings_cpu_was_not_measured(
        ceiling_cpu: float | None) -> None:
    """None: a run before the serving process was measured; 0: a point shorter than one tick
    of the CPU clock."""
    rows = judged([replace(CEILING, serving_cpu_us_per_request=ceiling_cpu), FAST])
    assert not any("serving process CPU per request <= 1.6x" in target for target in rows)


def test_without_mlserver_the_sklearn_target_uses_an_earlier_runs_figure() -> None:
    rows = judged([SKLEARN])
    measured, met = rows["scikit-learn, ab + log, 64 conns: >= 8x MLServer's best adaptive "
                         "batching (an earlier run)"]
    assert measured == "8.1x (9,000 vs 1,107 req/s)"
    assert met is True


def test_targets_table_marks_misses() -> None:
    table = targets_table([("a", "1", True), ("b", "2", False), ("c", "3", None)])
    assert table.splitlines()[2:] == ["| a | 1 | yes |", "| b | 2 | NO |", "| c | 3 | - |"]


def stack(count: int, *frames: str) -> str:
    """A line of py-spy's raw output: frames outermost first, then the samples."""
    return ";".join(frames) + f" {count}"


# py-spy 0.4's frames: qualified function names, paths from site-packages or the checkout.
THREAD = "Thread._bootstrap (threading.py:1002)"
POOL = (THREAD, "_worker (concurrent/futures/thread.py:83)",
        "_WorkItem.run (concurrent/futures/thread.py:58)",
        "ServedModel.predict (router/serving/model.py:215)")
LOOP = ("run (uvicorn/main.py:643)", "Runner.run (asyncio/runners.py:118)")
CYCLE = (*LOOP, "RequestResponseCycle.run_asgi (uvicorn/protocols/http/httptools_impl.py:420)",
         "Gateway.__call__ (router/gateway/app.py:73)")
ENDPOINT = (*CYCLE, "predict (router/gateway/endpoints.py:198)")
NUMPY = "asarray (numpy/_core/numeric.py:10)"
SKLEARN_STACKS = "\n".join([
    stack(40, *POOL, "DirectForest.predict_proba (router/serving/forest.py:53)"),
    stack(10, *POOL, "DirectForest.predict_proba (router/serving/forest.py:46)",
          "StandardScaler.transform (sklearn/preprocessing/_data.py:1111)", NUMPY),
    stack(5, THREAD, "_worker (concurrent/futures/thread.py:81)"),
    stack(8, *LOOP, "MicroBatcher._drain (router/serving/batching.py:84)",
          "MicroBatcher._call (router/serving/batching.py:157)",
          "ThreadPoolExecutor.submit (concurrent/futures/thread.py:175)"),
    stack(2, *LOOP, "MicroBatcher._drain (router/serving/batching.py:80)",
          "MicroBatcher._gather_more (router/serving/batching.py:102)",
          "sleep (asyncio/tasks.py:643)"),
    stack(6, *LOOP, "HttpToolsProtocol.data_received "
          "(uvicorn/protocols/http/httptools_impl.py:173)"),
    stack(2, *ENDPOINT, "read_json (router/gateway/endpoints.py:88)",
          "Request.stream (starlette/requests.py:243)",
          "receive_within.<locals>.receive_body (router/gateway/body_deadline.py:80)",
          "current_task (asyncio/tasks.py:38)"),
    stack(4, *ENDPOINT, "parse_predict_body (router/serving/inputs.py:90)", NUMPY),
    stack(2, *ENDPOINT, "encoded_answer (router/gateway/endpoints.py:186)"),
    stack(1, *ENDPOINT, "encoded_answer (router/gateway/endpoints.py:186)",
          "render_answer (router/gateway/endpoints.py:172)",
          "render_answer.<locals>.<listcomp> (router/gateway/endpoints.py:172)"),
    stack(9, *CYCLE, "Response.__call__ (starlette/responses.py:171)",
          "RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:522)"),
    stack(2, *ENDPOINT, "PredictionService.predict (router/serving/service.py:126)",
          "PredictionService._log (router/serving/service.py:168)",
          "__create_fn__.<locals>.__init__ (<string>:3)"),
    stack(2, *ENDPOINT, "PredictionService.predict (router/serving/service.py:95)",
          "PredictionService.variant_for (router/serving/service.py:80)"),
    stack(1, *CYCLE, "counted.<locals>.wrapper (router/gateway/metrics.py:179)",
          "Histogram.observe (prometheus_client/metrics.py:681)"),
    stack(2, *LOOP),
    stack(4, THREAD),
    "a torn sample",
])


def test_scikit_learns_frames_and_the_thread_pool_hop_group_as_model_and_batching() -> None:
    samples, shares = profiles.breakdown(SKLEARN_STACKS)
    assert samples == 100
    assert shares == pytest.approx({
        "parsing": 0.08, "validation": 0.04, "assignment": 0.02, "batching": 0.15,
        "model": 0.50, "encoding": 0.03, "sending": 0.09, "logging": 0.02, "metrics": 0.01,
        "framework": 0.02, "other": 0.04})
    assert list(shares) == [p for p in profiles.ORDER if p in shares]


def test_every_part_is_in_the_reports_order_and_has_a_meaning() -> None:
    parts = {name for name, _, _ in profiles.PARTS} | {"other"}
    assert set(profiles.ORDER) == parts == set(profiles.MEANING)


@pytest.mark.parametrize(("frame", "part"), [
    ("PredictionService._log (router/serving/service.py:168)", "logging"),
    ("PredictionService.variant_for (router/serving/service.py:80)", "assignment"),
    ("render_answer.<locals>.<listcomp> (router/gateway/endpoints.py:172)", "encoding"),
    ("header_map (router/gateway/request_keys.py:23)", "parsing"),
    ("predict (router/gateway/endpoints.py:198)", "framework"),
    ("Session.run (onnxruntime/capi/onnxruntime_inference_collection.py:406)", "model"),
    ("sleep (asyncio/tasks.py:643)", None),
    ("recorder_send (router/gateway/x.py:1)", "framework"),
    ("JoinedWrites.write (router/gateway/response_writes.py:52)", "sending"),
    ("LimitedHttpToolsProtocol._answer_direct (router/gateway/connections.py:194)", "sending"),
    ("LimitedHttpToolsProtocol._start_direct (router/gateway/connections.py:168)", "framework"),
    ("LimitedHttpToolsProtocol.data_received (router/gateway/connections.py:110)", "parsing"),
])
def test_a_frame_belongs_to_its_functions_part_before_its_files(frame: str,
                                                                 part: str | None) -> None:
    assert profiles.part_of(frame) == part


def test_a_profile_shows_each_part_as_microseconds_per_request_and_share() -> None:
    _, shares = profiles.breakdown(SKLEARN_STACKS)
    profile = profiles.Profile(key="ab-sklearn", label="router ab, scikit-learn",
                               taken="2026-01-01 00:00 UTC", seconds=20, connections=64,
                               rps=9_000, serving_cpu_us_per_request=120.0, samples=100,
                               shares=shares)
    assert profile.us_per_request("model") == pytest.approx(60.0)
    rows = profiles.parts_table([profile]).splitlines()
    assert rows[0] == ("| part | what it holds | router ab, scikit-learn: µs/req | share |")
    model = next(row for row in rows if row.startswith("| model |"))
    assert model.endswith("| 60.0 | 50.0 % |")
    assert rows[-1].endswith("| **120.0** | 100 % |")
    assert "## Where the time goes" in profiles.section([profile])
    assert profiles.section([]) == ""


def test_profiles_are_saved_and_found_again_in_the_order_asked(tmp_path: Path) -> None:
    made = [profiles.Profile(key=key, label=key, taken="t", seconds=3, connections=64, rps=1.0,
                             serving_cpu_us_per_request=1.0, samples=1, shares={"model": 1.0})
            for key in ("ab-sklearn", "ab-fast")]
    for profile in made:
        profiles.save(profile, tmp_path)
    assert profiles.load(tmp_path, ("ab-fast", "ab-sklearn", "ceiling")) == made[::-1]


def test_profiles_found_again_are_grouped_again_from_their_raw_stacks(tmp_path: Path) -> None:
    stale = profiles.Profile(key="ab-sklearn", label="ab", taken="t", seconds=3, connections=64,
                             rps=1.0, serving_cpu_us_per_request=100.0, samples=1,
                             shares={"other": 1.0})
    profiles.save(stale, tmp_path)
    profiles.raw_path(tmp_path, "ab-sklearn").write_text(SKLEARN_STACKS)
    (found,) = profiles.load(tmp_path, ("ab-sklearn",))
    assert found.samples == 100
    assert found.us_per_request("model") == pytest.approx(50.0)


def test_the_soak_judges_the_memory_beside_the_kept_columns() -> None:
    """The kept analysis columns grow with the log by design; everything else must stay within
    +10 % of the first minute's."""
    from bench.serving import soak_section

    mb = 1024 * 1024
    raw = {"requests": 600_000, "errors": {"read": 0}, "p99_us": 9_000}
    # RSS grows by exactly what the kept columns grow by: the rest is flat.
    flat = [(t, 300 * mb + t * mb, t * mb) for t in range(0, 600, 5)]
    text = soak_section(600, raw, flat)
    assert "**+0.0 %**" in text and "met)" in text and "NOT met" not in text
    # The rest grows by a fifth after the first minute: a leak.
    leak = [(t, 300 * mb + (60 * mb if t >= 300 else 0) + t * mb, t * mb)
            for t in range(0, 600, 5)]
    assert "NOT met" in soak_section(600, raw, leak)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to move between")
def test_moving_the_log_writer_moves_every_one_of_its_threads() -> None:
    """The writer process's writer thread (SQLite's inserts) starts before the benchmark moves
    the process: moving the process id alone would leave that thread on the serving core."""
    from bench.serving import Running

    code = ("import threading, time\n"
            "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")
    cpus = sorted(os.sched_getaffinity(0))
    child = subprocess.Popen([sys.executable, "-c", code, "router.outcomes.writer_child"],
                             stdout=subprocess.PIPE, text=True,
                             preexec_fn=lambda: os.sched_setaffinity(0, {cpus[0]}))
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        target = object.__new__(Running)
        target.pids = lambda: [os.getpid(), child.pid]  # type: ignore[method-assign]
        assert target.move_log_writer(str(cpus[1])) == [child.pid]
        threads = os.listdir(f"/proc/{child.pid}/task")
        assert len(threads) == 2
        assert all(os.sched_getaffinity(int(t)) == {cpus[1]} for t in threads)
    finally:
        child.kill()
        child.communicate()


def _states(pids: list[int], stopped: bool) -> list[str]:
    """Each process's state once all are stopped ("T"), or none is: a signal takes effect
    when the kernel next schedules the process."""
    deadline = time.monotonic() + 10
    while True:
        states = [Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                  for pid in pids]
        settled = states.count("T") == len(pids) if stopped else "T" not in states
        if settled or time.monotonic() > deadline:
            return states
        time.sleep(0.01)


def test_a_paused_server_runs_nothing_until_resumed_and_stops_while_paused() -> None:
    """The log pairs pause the server not under load, every process of it (the log's writer
    process too), and a paused server must still stop at the end of the run."""
    from bench.serving import Running

    code = ("import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    target = object.__new__(Running)
    target.process = server
    target._log = open(os.devnull, "wb")  # noqa: SIM115  closed by stop()
    try:
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 10
        while len(pids := target.pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pids) == 2
        target.pause()
        assert _states(pids, stopped=True) == ["T", "T"]
        target.resume()
        assert "T" not in _states(pids, stopped=False)
        target.pause()
    finally:
        target.stop()
        assert server.stdout is not None
        server.stdout.close()
    assert server.returncode is not None


def pair(on_rps: float, off_rps: float, on_cpu: float, off_cpu: float) -> dict[str, Any]:
    return {"on": asdict(point("ab-fast", rps=on_rps, serving=on_cpu)),
            "off": asdict(point("ab-fast-nolog", rps=off_rps, serving=off_cpu))}


# Three pairs: 2 %, 20 % (a noisy one) and 4 % of throughput; +1, +9 and +3 µs.
PAIRS = {"fast": [pair(9_800, 10_000, 101, 100), pair(8_000, 10_000, 110, 101),
                  pair(9_600, 10_000, 103, 100)]}


def test_logging_is_judged_on_the_median_of_the_interleaved_pairs() -> None:
    """The run's own log-on and log-off points (4 % and +3 µs in RUN) give way to the pairs'
    medians, and one noisy pair does not decide."""
    rows = {target: (measured, met) for target, measured, met in targets(RUN, PAIRS)}
    throughput = rows["ONNX Runtime, ab, 64 conns: logging costs <= 5 % of throughput"]
    assert throughput == ("4.0 % (9,600 vs 10,000 req/s), the median of 3 interleaved pairs",
                          True)
    cpu = rows["ONNX Runtime, ab, 64 conns: logging costs <= 5 µs of the serving process's CPU "
               "per request"]
    assert cpu == ("+3.0 µs (103 vs 100), the median of 3 interleaved pairs", True)
    # scikit-learn has no pairs in this run: its own two points still judge it.
    assert rows["scikit-learn, ab, 64 conns: logging costs <= 5 % of throughput"][0] == \
        "2.2 % (9,000 vs 9,200 req/s)"


def test_the_report_shows_every_pair_after_the_targets() -> None:
    text = report_text(RUN, {"log_pairs": PAIRS}, INFO, [])
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[2:4] == ["## Targets", "## Logging's cost, in interleaved pairs"]
    assert "| ONNX Runtime | 2 | 8,000 | 10,000 | 20.0 % | 110.0 / 101.0 (+9.0) |" in text
    assert "interleaved pairs" not in report_text(RUN, {}, INFO, [])


def against_ceiling(rps: float, cpu: float, ceiling_rps: float, ceiling_cpu: float
                    ) -> dict[str, Any]:
    return {"router": asdict(point("ab-fast", rps=rps, serving=cpu)),
            "ceiling": asdict(point("ceiling", rps=ceiling_rps, serving=ceiling_cpu))}


# Three pairs against the ceiling: 0.62x, 0.40x (a noisy one) and 0.65x of its requests/s;
# 1.55x, 2.40x and 1.50x its CPU.
CEILING_PAIRS = [against_ceiling(12_400, 62.0, 20_000, 40.0),
                 against_ceiling(8_000, 96.0, 20_000, 40.0),
                 against_ceiling(13_000, 60.0, 20_000, 40.0)]


def test_the_ceilings_targets_are_judged_on_the_median_of_the_interleaved_pairs() -> None:
    """RUN's own two points (0.62x and 1.50x) give way to the pairs' medians, and one noisy
    pair does not decide."""
    rows = {target: (measured, met)
            for target, measured, met in targets(RUN, None, CEILING_PAIRS)}
    assert rows["ONNX Runtime, ab + log, 64 conns: >= 0.6x the ceiling's req/s"] == (
        "0.62x (12,400 vs 20,000 req/s), the median of 3 interleaved pairs", True)
    assert rows["ONNX Runtime, ab + log, 64 conns: serving process CPU per request <= 1.6x the "
                "ceiling's"] == ("1.55x (62 vs 40 µs), the median of 3 interleaved pairs", True)
    noisy = [CEILING_PAIRS[1], CEILING_PAIRS[1], CEILING_PAIRS[0]]
    rows = {target: met for target, _, met in targets(RUN, None, noisy)}
    assert rows["ONNX Runtime, ab + log, 64 conns: >= 0.6x the ceiling's req/s"] is False


def test_the_report_shows_every_pair_against_the_ceiling() -> None:
    text = report_text(RUN, {"ceiling_pairs": CEILING_PAIRS},
                       {**INFO, "log_pair_seconds": 5.0}, [])
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[2:4] == ["## Targets", "## Against the ceiling, in interleaved pairs"]
    assert "| 2 | 8,000 | 20,000 | 0.40x | 96.0 / 40.0 (2.40x) |" in text
    assert "Against the ceiling" not in report_text(RUN, {}, INFO, [])


def test_pairs_measured_side_by_side_say_so_and_how_far_they_spread() -> None:
    pairs = {"fast": [*PAIRS["fast"], pair(9_500, 10_000, 104, 100)]}  # 2, 20, 4 and 5 %
    text = pairs_section(pairs, 5.0)
    assert "5 s each: two servers started side by side" in text
    assert "ONNX Runtime: the middle half of the 4 pairs cost 3.5 to 8.8 % of throughput." \
        in text
    assert "two servers started side by side" in \
        report_text(RUN, {"log_pairs": pairs}, {**INFO, "log_pair_seconds": 5.0}, [])
    assert "middle half" not in pairs_section(PAIRS)  # three pairs: no quartiles
    assert "each on a fresh server" in pairs_section(PAIRS)  # a run from before, as it was


def test_the_serving_process_is_read_thread_by_thread_its_pools_as_one() -> None:
    """The main thread is the event loop; a pool's threads (``router-model_0``,
    ``router-model_1``) count as one, by the names they give the OS; in seconds of CPU."""
    from bench.serving import Running

    spun, release = threading.Barrier(3), threading.Event()

    def spin() -> None:
        name_native_thread()
        deadline = time.thread_time() + 0.05
        while time.thread_time() < deadline:
            pass
        spun.wait()
        release.wait()

    workers = [threading.Thread(target=spin, name=f"bench-pool_{i}") for i in range(2)]
    for worker in workers:
        worker.start()
    try:
        spun.wait()
        target = object.__new__(Running)
        target.process = type("Process", (), {"pid": os.getpid()})()  # type: ignore[assignment]
        seconds = target.thread_seconds()
    finally:
        release.set()
        for worker in workers:
            worker.join()
    assert 0.1 <= seconds["bench-pool"] < 1.0
    assert seconds["event loop"] > 0
    assert not any(name.startswith("bench-pool_") for name in seconds)


def test_the_thread_table_shows_each_router_server_at_the_most_connections() -> None:
    fast = replace(FAST, thread_cpu_us_per_request={
        "event loop": 55.0, "outcome-handoff": 2.5, "router-io": 1.0, "outcome-status": 0.1})
    nolog = replace(FAST_NOLOG, thread_cpu_us_per_request={"event loop": 56.5})
    rows = thread_table([CEILING, fast, nolog, point("ab-fast", 16)]).splitlines()
    assert rows[0] == ("| server | conns | event loop | outcome-handoff | outcome-status "
                       "| router-io |")
    assert rows[2] == "| router ab, ONNX Runtime | 64 | 55.0 | 2.5 | 0.1 | 1.0 |"
    assert rows[3] == "| router ab, ONNX Runtime, log off | 64 | 56.5 | - | - | - |"
    assert len(rows) == 4
    assert thread_table([CEILING, FAST]) == ""  # a run before threads were read


def test_the_pairs_say_what_the_log_added_thread_by_thread() -> None:
    """The median over an engine's pairs of each thread's CPU with the log less without."""
    threads = [({"event loop": 58.0, "outcome-handoff": 2.4, "router-io": 0.9},
                {"event loop": 55.0}),
               ({"event loop": 60.0, "outcome-handoff": 2.2, "router-io": 1.1},
                {"event loop": 56.0}),
               ({"event loop": 57.0, "outcome-handoff": 2.6, "router-io": 1.0},
                {"event loop": 55.5})]
    pairs = {"fast": [{"on": {**p["on"], "thread_cpu_us_per_request": on},
                       "off": {**p["off"], "thread_cpu_us_per_request": off}}
                      for p, (on, off) in zip(PAIRS["fast"], threads, strict=True)]}
    text = pairs_section(pairs)
    assert ("By thread, log on less log off, the median of ONNX Runtime's pairs (µs per "
            "request): event loop +3.0, outcome-handoff +2.4, router-io +1.0.") in text
    assert "By thread" not in pairs_section(PAIRS)  # pairs measured before threads were read
