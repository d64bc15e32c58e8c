"""MLServer in the serving benchmark: its own environment, a model repository serving the same
joblib pipeline as the router, and the Open Inference Protocol (V2) request bodies.

MLServer runs from ``var/mlserver-venv`` (``bench/mlserver-requirements.txt``): version 1.7.1
needs ``uvloop<0.22``, which must not replace the router's own uvloop. It is run the way its
documentation shows, ``mlserver start <folder>`` with ``settings.json`` and one
``model-settings.json``: the scikit-learn runtime, inference in its default worker process,
its access log and metrics server on. Only the ports and, for adaptive batching,
``max_batch_size`` and ``max_batch_time`` are set.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = Path(__file__).with_name("mlserver-requirements.txt")
VENV = REPO / "var" / "mlserver-venv"
MODEL_NAME = "iris-rf"
INFER_PATH = f"/v2/models/{MODEL_NAME}/infer"
# The adaptive-batching settings tried, (max_batch_size, max_batch_time in ms): the default
# 64 / 1 ms of PERF-NOTES.md's figure, and on either side of it more rows per call against a
# longer wait.
GRID: tuple[tuple[int, float], ...] = ((16, 1.0), (64, 1.0), (64, 5.0), (128, 10.0))


def _wanted() -> str:
    """What the environment must hold: the requirements file and the router's scikit-learn,
    so that both sides load the same joblib file the same way."""
    return (REQUIREMENTS.read_text()
            + f"scikit-learn=={importlib.metadata.version('scikit-learn')}\n")


def ensure_environment() -> Path:
    """The ``mlserver`` command of ``var/mlserver-venv``, made and installed when missing or
    when the requirements changed."""
    marker = VENV / ".installed"
    command = VENV / "bin" / "mlserver"
    wanted = _wanted()
    if command.exists() and marker.exists() and marker.read_text() == wanted:
        return command
    print(f"installing MLServer into {VENV} (its own environment)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-r", str(REQUIREMENTS),
                    f"scikit-learn=={importlib.metadata.version('scikit-learn')}"], check=True)
    marker.write_text(wanted)
    return command


def installed_version() -> str:
    """MLServer's and uvloop's versions in its environment, for the report."""
    found = subprocess.run(
        [str(VENV / "bin" / "python"), "-c",
         "import importlib.metadata as m; "
         "print(', '.join(f'{p} {m.version(p)}' for p in "
         "('mlserver', 'mlserver-sklearn', 'uvloop', 'scikit-learn')))"],
        capture_output=True, text=True, check=False)
    return found.stdout.strip() or "not installed"


def command(folder: Path, model_file: Path, batching: tuple[int, float] | None, port: int,
            free_port: Callable[[], int]) -> tuple[list[str], dict[str, str], Path]:
    """Write a model repository in ``folder`` serving ``model_file`` on ``port`` (gRPC and
    metrics on other free ports); the command line, environment and working directory that
    start MLServer on it."""
    model_dir = folder / MODEL_NAME
    model_dir.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(
        {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
         "metrics_port": free_port()}))
    settings: dict[str, object] = {
        "name": MODEL_NAME, "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(model_file), "version": "1"}}
    if batching is not None:
        settings["max_batch_size"] = batching[0]
        settings["max_batch_time"] = batching[1] / 1000
    (model_dir / "model-settings.json").write_text(json.dumps(settings))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return [str(ensure_environment()), "start", str(folder)], env, folder


def bodies(rows: Sequence[Sequence[float]]) -> str:
    """One V2 inference request a line, one row each; the answer is ``predict``'s label (the
    runtime's default output: asking for ``predict_proba`` too would call the forest twice)."""
    return "".join(json.dumps({"inputs": [{"name": "input-0", "shape": [1, len(row)],
                                           "datatype": "FP64", "data": list(row)}]}) + "\n"
                   for row in rows)
