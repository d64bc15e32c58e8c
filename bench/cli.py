"""How long the ``router`` commands take, as wall time and as a multiple of ``python -c pass``.

    python -m bench.cli [--repeats 5] [--out bench/cli-results.md]

Each command runs as a fresh process, the way a person or a script runs it; the figure is the
median over ``--repeats`` runs. Dividing by the median of ``python -c pass`` (the interpreter's
own start-up) on the same machine in the same run makes the figures comparable across machines
and loads; the targets are set in seconds on the reference 2-core machine and checked here on
the raw medians. The demo's models are trained once in a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx

REPO = Path(__file__).resolve().parents[1]
ROUTER = Path(sys.executable).with_name("router")
PENDING = "scikit-learn while ONNX Runtime's parity is being checked"


@dataclass(frozen=True)
class Figure:
    name: str
    seconds: list[float]
    target_s: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def _router(*args: str) -> list[str]:
    return [str(ROUTER), *args] if ROUTER.exists() else [
        sys.executable, "-c", "import sys; from router.cli import main; sys.exit(main())", *args]


def _timed_run(argv: list[str], cwd: Path, expect: int) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}, expected {expect}:\n"
                         f"{done.stderr}")
    return elapsed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _serving(config: Path, cwd: Path) -> Iterator[tuple[str, float, subprocess.Popen[bytes]]]:
    """``router serve`` until ``/ready`` answers 200: (url, seconds to ready, process)."""
    port = _free_port()
    started = time.perf_counter()
    process = subprocess.Popen(_router("serve", "--config", str(config), "--port", str(port)),
                               cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"router serve exited {process.returncode} before ready")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            time.sleep(0.02)
        yield url, time.perf_counter() - started, process
    finally:
        process.terminate()
        process.wait(60)


def _engines_chosen(url: str, started: float) -> float:
    while True:
        models = httpx.get(f"{url}/config", timeout=5).json()["models"]
        if all(m["engine_reason"] != PENDING for m in models.values()):
            return time.perf_counter() - started
        time.sleep(0.05)


def measure(repeats: int, root: Path) -> list[Figure]:
    subprocess.run(_router("train-demo", "--dir", str(root)), check=True, capture_output=True)
    good = root / "configs" / "router.yaml"
    bad_key = root / "configs" / "bad-key.yaml"
    bad_key.write_text(good.read_text().replace("mode: ab", "mode: ab\nmdoe: single", 1))
    missing = root / "configs" / "missing-model.yaml"
    missing.write_text(good.read_text().replace("models/", "modles/", 1))

    def runs(argv: list[str], expect: int) -> list[float]:
        return [_timed_run(argv, root, expect) for _ in range(repeats)]

    figures = [
        Figure("python -c pass", runs([sys.executable, "-c", "pass"], 0)),
        Figure("router --help", runs(_router("--help"), 0), 0.3),
        Figure("router validate (a bad key)", runs(_router("validate", str(bad_key)), 1), 1.0),
        Figure("router validate (a missing model directory)",
               runs(_router("validate", str(missing)), 1), 1.0),
        Figure("router validate (valid; loads both models)",
               runs(_router("validate", str(good)), 0)),
        Figure("router serve (a bad key: error and exit)",
               runs(_router("serve", "--config", str(bad_key)), 1), 1.0),
    ]
    ready, engines = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        with _serving(good, root) as (url, seconds, _):
            ready.append(seconds)
            engines.append(_engines_chosen(url, started))
    figures.append(Figure("router serve (start to /ready 200)", ready))
    figures.append(Figure("router serve (start to both engines chosen)", engines))
    return figures


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def report(figures: list[Figure], repeats: int, load_before: tuple[float, ...],
           load_after: tuple[float, ...]) -> str:
    baseline = figures[0].median
    cpu = platform.processor() or platform.machine()
    lines = [
        "# Command start-up benchmark",
        "",
        f"Written by `python -m bench.cli --repeats {repeats}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Do not edit by hand: run it "
        "again.",
        "",
        f"- Machine: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"scikit-learn {_package_version('scikit-learn')}, onnxruntime "
        f"{_package_version('onnxruntime')}, uvicorn {_package_version('uvicorn')}.",
        "- Load average (1, 5, 15 min) before the run: "
        f"{' '.join(f'{x:.2f}' for x in load_before)}; after: "
        f"{' '.join(f'{x:.2f}' for x in load_after)}.",
        "  A load above the core count means other work shared the machine: every figure is",
        "  then slower than on a quiet one, and the ratios to `python -c pass` are the figures",
        "  to compare.",
        "- Each command is a fresh process; wall time, median of "
        f"{repeats} runs (min and max beside it). The demo's models (a logistic regression and a",
        "  100-tree random forest, `router train-demo`).",
        "",
        "| command | median s | min s | max s | x `python -c pass` | target |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for f in figures:
        target = "" if f.target_s is None else (
            f"under {f.target_s:g} s: {'met' if f.median < f.target_s else 'MISSED'}")
        lines.append(f"| {f.name} | {f.median:.3f} | {min(f.seconds):.3f} | "
                     f"{max(f.seconds):.3f} | {f.median / baseline:.1f} | {target} |")
    lines += [
        "",
        "`/ready` answers once both models are loaded with scikit-learn; ONNX Runtime's parity",
        "check then runs beside serving, and the last row is when it has chosen both engines.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None,
         loadavg: Callable[[], tuple[float, float, float]] = os.getloadavg) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "cli-results.md")
    args = parser.parse_args(argv)
    before = loadavg()
    with tempfile.TemporaryDirectory(prefix="router-cli-bench-") as directory:
        figures = measure(args.repeats, Path(directory))
    text = report(figures, args.repeats, before, loadavg())
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
