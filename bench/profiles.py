"""Where the serving process's time goes: py-spy's collapsed stacks grouped into parts, each
shown as a share of the samples and as microseconds per request.

py-spy samples the thread that holds the GIL (``--gil``). Without it, py-spy also counts
threads the kernel calls runnable, and on one busy core those are mostly threads just woken
that wait for the GIL (the thread pool's idle worker, the log's hand-over thread): they would
take a third of the samples while doing nothing. So native code that releases the GIL (ONNX
Runtime's run, a tree's walk, waiting in epoll) is not sampled.

A sample counts once, for the innermost frame that belongs to a part (``PARTS``); frames of
no part (asyncio's tasks and futures, numpy, a dataclass's ``__init__``) count for their
caller's part, so ``asyncio.sleep`` called by the micro-batcher is batching and numpy called
by scikit-learn is the model. Native code (orjson, httptools) counts for the Python function
that called it. A part's microseconds per request are its share of the samples times the
serving process's CPU per request measured while they were taken.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

# Each part, the files whose frames are its own (a part of the path) and the functions that
# are its own wherever they live (a qualified name, or a part of one: ``render_answer`` takes
# ``render_answer.<locals>.<listcomp>`` too). A frame takes the first part that names it, so
# the parts with specific functions come before those owning whole packages.
PARTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("logging", ("router/outcomes/",), ("PredictionService._log", "submit_answered")),
    ("metrics", ("router/gateway/metrics.py", "prometheus_client/"), ()),
    ("encoding", (), ("encoded_answer", "render_answer", "raw_answer_headers", "JSONAnswer",
                      "PredictionService._answer")),
    ("sending", ("router/gateway/response_writes.py",),
     ("RequestResponseCycle.send", "_answer_direct", "response_bytes")),
    # The request cycle's own lines in the connection protocol (the direct /predict path).
    ("framework", (), ("_start_direct", "_start_asgi_task", "answer_predict",
                       "_predict_response", "direct_predict_open")),
    ("parsing", ("uvicorn/protocols/", "router/gateway/connections.py",
                 "router/gateway/body_deadline.py", "starlette/requests.py"),
     ("read_json", "decode_json", "header_map")),
    ("validation", ("router/serving/inputs.py", "router/serving/input_bounds.py"), ()),
    ("assignment", ("router/serving/assignment.py", "router/gateway/request_keys.py",
                    "router/gateway/request_ids.py", "router/serving/service.py"),
     ("request_id_of", "new_request_id")),
    ("batching", ("router/serving/batching.py", "concurrent/futures/"),
     ("run_in_executor", "_chain_future", "_copy_future_state", "_call_set_state")),
    ("model", ("onnxruntime/", "sklearn/", "joblib/", "threadpoolctl", "router/serving/engines.py",
               "router/serving/forest.py", "router/serving/model.py",
               "router/serving/registry.py"), ()),
    # The event loop's own C code shows as asyncio's Runner.run with nothing inside it.
    ("framework", ("starlette/", "uvicorn/", "router/gateway/", "uvloop/",
                   "asyncio/runners.py"), ()),
)
# What each part holds, for the report.
MEANING = {
    "parsing": "uvicorn reading requests (httptools), the body and its deadline, headers, "
               "JSON decoding",
    "validation": "features to a row of floats, types and bounds",
    "assignment": "request id, user key, variant; the service's own lines",
    "batching": "micro-batcher, futures, the thread-pool hop",
    "model": "ONNX Runtime or scikit-learn, and the engine around it (with the GIL held)",
    "encoding": "the answer's JSON and headers",
    "sending": "the answer written to the socket, head and body in one write",
    "logging": "the answered rows handed to the writer process, and their packing",
    "metrics": "/metrics counting",
    "framework": "the request's coroutine and its stepping, Starlette and uvicorn's ASGI cycle "
                 "where used, the endpoint's own lines, the event loop's C code",
    "other": "frames of no part above",
}
ORDER = ("parsing", "validation", "assignment", "batching", "model", "encoding", "sending",
         "logging", "metrics", "framework", "other")


def _names(function: str, key: str) -> bool:
    """Whether ``key`` (``name`` or ``Class.name``) is a run of ``function``'s dotted parts."""
    parts, wanted = function.split("."), key.split(".")
    return any(parts[i:i + len(wanted)] == wanted for i in range(len(parts)))


def part_of(frame: str) -> str | None:
    """The part a py-spy frame, ``function (file:line)``, belongs to; None for none."""
    function, _, location = frame.partition(" (")
    return next((name for name, paths, functions in PARTS
                 if any(p in location for p in paths)
                 or any(_names(function, f) for f in functions)), None)


def stacks(text: str) -> Iterable[tuple[list[str], int]]:
    """(frames, outermost first; samples) of each line of py-spy's raw (collapsed) output."""
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        # Sampling a running process can tear a sample: such a line is skipped.
        if stack and count_text.isdigit():
            yield stack.split(";"), int(count_text)


def breakdown(text: str) -> tuple[int, dict[str, float]]:
    """The samples in a profile and each part's share of them, in ``ORDER``."""
    samples: Counter[str] = Counter()
    for frames, count in stacks(text):
        part = next((p for p in map(part_of, reversed(frames)) if p is not None), "other")
        samples[part] += count
    total = sum(samples.values())
    return total, {name: samples[name] / total for name in ORDER if samples[name]} \
        if total else {}


def summarize(text: str, top: int = 25) -> str:
    """Self and inclusive sample shares per function."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for stack, count in stacks(text):
        total += count
        frames = [re.sub(r" \((/.*/)?", " (", f) for f in stack]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples; self time:"]
    lines += [f"  {n / total * 100:5.1f} %  {f}" for f, n in own.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {n / total * 100:5.1f} %  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


@dataclass(frozen=True)
class Profile:
    """One server's profile: what was measured while py-spy sampled it."""

    key: str
    label: str
    taken: str
    seconds: float
    connections: int
    rps: float
    serving_cpu_us_per_request: float
    samples: int
    shares: dict[str, float]

    def us_per_request(self, part: str) -> float:
        return self.shares.get(part, 0.0) * self.serving_cpu_us_per_request


def raw_path(out: Path, key: str) -> Path:
    return out / f"profile-{key}.txt"


def save(profile: Profile, out: Path) -> None:
    (out / f"profile-{profile.key}.json").write_text(json.dumps(asdict(profile), indent=1))


def load(out: Path, keys: Sequence[str]) -> list[Profile]:
    """The profiles of ``keys`` found in ``out``, in that order; grouped again from their raw
    stacks when those are there, so a report written again shows the current ``PARTS``."""
    found = []
    for key in keys:
        path = out / f"profile-{key}.json"
        if not path.exists():
            continue
        profile = Profile(**json.loads(path.read_text()))
        if raw_path(out, key).exists():
            samples, shares = breakdown(raw_path(out, key).read_text())
            profile = replace(profile, samples=samples, shares=shares)
        found.append(profile)
    return found


def parts_table(profiles: Sequence[Profile]) -> str:
    """One row a part, and for each profile its µs per request and share of the samples."""
    head = "| part | what it holds |" + "".join(f" {p.label}: µs/req | share |"
                                                for p in profiles)
    rule = "| --- | --- |" + " ---: | ---: |" * len(profiles)
    rows = [head, rule]
    for part in ORDER:
        if not any(part in p.shares for p in profiles):
            continue
        cells = "".join(f" {p.us_per_request(part):.1f} | {p.shares.get(part, 0) * 100:.1f} % |"
                        for p in profiles)
        rows.append(f"| {part} | {MEANING[part]} |{cells}")
    totals = "".join(f" **{p.serving_cpu_us_per_request:.1f}** | 100 % |" for p in profiles)
    rows.append(f"| **all** | the serving process's CPU per request |{totals}")
    return "\n".join(rows)


def section(profiles: Sequence[Profile]) -> str:
    """The report's section on where the time goes; empty without profiles."""
    if not profiles:
        return ""
    runs = "".join(
        f"- {p.label}: {p.seconds:g} s at {p.connections} connections on {p.taken}, "
        f"{p.samples:,} samples; {p.rps:,.0f} req/s and "
        f"{p.serving_cpu_us_per_request:.1f} µs of serving-process CPU per request while "
        f"sampled; raw stacks in `profile-{p.key}.txt` beside this file.\n" for p in profiles)
    return ("## Where the time goes\n\n"
            "py-spy sampled the thread of the serving process that held the GIL, 100 times a "
            "second (`bench/profiles.py` says why). A sample counts for the innermost frame "
            "that belongs to a part; native code that keeps the GIL (orjson, httptools) counts "
            "for the Python function that called it, and native code that releases it (ONNX "
            "Runtime's run, a tree's walk) is not sampled, so its CPU is spread over the parts. "
            "A part's µs per request is its share of the samples times the serving process's "
            "CPU per request measured while they were taken (py-spy pauses the process to "
            "read it, so that figure can differ from the table's above). On a virtual "
            "machine the pauses land on system calls far more often than their share of the "
            "time: the batcher's `asyncio.get_running_loop()`, which made one (getpid) for "
            "each request until 2026-12-06, drew 13 to 19 % of the samples though it cost "
            "0.2 µs in a loop. Parts around a system call (batching, sending) are overstated; "
            "paired runs, not these shares, decide a change.\n\n"
            + runs + "\n" + parts_table(profiles) + "\n\n")
