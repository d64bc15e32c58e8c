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
    from router.serving.registry import ServedModel

CHECK_TIMEOUT_S = 600.0


def _encode(graph: bytes | None) -> str | None:
    return None if graph is None else base64.b64encode(graph).decode("ascii")


def _decode(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def choice_apart(served: ServedModel) -> EngineChoice:
    """The engine choice for ``served``, worked out in a child process."""
    env = dict(os.environ)
    # The child imports what this process imports (a model may pickle classes of the caller).
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    done = subprocess.run(
        [sys.executable, "-m", "router.serving.engine_check", str(served.path), served.sha256],
        capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, env=env, check=False)
    try:
        answer: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return EngineChoice(SKLEARN, f"parity check failed: {last}")
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
    from router.serving.registry import ServedModel

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
