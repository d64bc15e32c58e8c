"""ONNX Runtime's parity check in a child process, so that it takes nothing from serving.

Converting a model (skl2onnx builds the graph in Python) and checking it on the reference
sample takes seconds of CPU, most of it holding the interpreter lock: in a thread of the
gateway it slowed every request and reload of that time. Here the check runs in a child
process (``python -m router.serving.engine_check DIRECTORY SHA256``) that loads the same
verified model directory, makes the choice exactly as
:func:`router.serving.engines.choose_engine` does, and prints it as JSON with the serialized
graphs; the gateway then builds the sessions from those bytes.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.serving.engines import (
    ONNXRUNTIME,
    SKLEARN,
    EngineChoice,
    rebuild_runner,
    split_pipeline,
)

if TYPE_CHECKING:
    from router.serving.model import ServedModel

CHECK_TIMEOUT_S = 600.0


def _encode(graph: bytes | None) -> str | None:
    return None if graph is None else base64.b64encode(graph).decode("ascii")


def _decode(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


# The child's answers by model directory and digest: a gateway rebuilt on the same files (a
# reload that swaps only the traffic split, or one process starting several gateways) gets the
# choice without converting the model again.
_answers: dict[tuple[str, str], dict[str, Any]] = {}
_answer_locks: dict[tuple[str, str], threading.Lock] = {}
_lock = threading.Lock()


def _check_in_child(directory: str, sha256: str) -> dict[str, Any]:
    env = dict(os.environ)
    # The child imports what this process imports (a model may pickle classes of the caller).
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    done = subprocess.run(
        [sys.executable, "-m", "router.serving.engine_check", directory, sha256],
        capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, env=env, check=False)
    try:
        answer: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"engine": SKLEARN, "reason": f"parity check failed: {last}", "failed": True}
    return answer


def _answer(directory: str, sha256: str) -> dict[str, Any]:
    key = (directory, sha256)
    with _lock:
        key_lock = _answer_locks.setdefault(key, threading.Lock())
    with key_lock:  # one child per model at a time, however many gateways ask
        answer = _answers.get(key)
        if answer is None:
            answer = _check_in_child(directory, sha256)
            if not answer.get("failed"):  # a crash or a time-out is tried again next load
                _answers[key] = answer
        return answer


def choice_apart(served: ServedModel) -> EngineChoice:
    """The engine choice for ``served``, worked out in a child process (once per model
    directory and digest in this process)."""
    answer = _answer(str(served.path), served.sha256)
    if answer["engine"] != ONNXRUNTIME:
        return EngineChoice(SKLEARN, answer["reason"])
    pre, estimator = (_decode(g) for g in answer["graphs"])
    assert estimator is not None
    runner = rebuild_runner(split_pipeline(served.model)[0], answer["precision"], served.quiet,
                            chained=answer["chained"], graphs=(pre, estimator))
    return EngineChoice(ONNXRUNTIME, answer["reason"], runner)


def main(argv: list[str]) -> int:
    from router.artifacts import load_model
    from router.artifacts.trust import ModelTrust
    from router.serving.model import ServedModel

    directory, sha256 = argv
    trust = ModelTrust.from_env()
    artifact = load_model(Path(directory), trusted_types=trust.trusted_types,
                          public_key=trust.public_key)
    if artifact.metadata["sha256"] != sha256:
        print(f"{directory} changed while its engine was being chosen", file=sys.stderr)
        return 1
    choice = ServedModel(artifact, choose_engine_now=False).engine_choice()
    runner = choice.runner
    answer = {"engine": choice.engine, "reason": choice.reason,
              "precision": None if runner is None else runner.precision,
              "chained": False if runner is None else runner.chained,
              "graphs": [] if runner is None else [_encode(g) for g in runner.graphs]}
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
