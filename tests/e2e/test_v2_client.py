"""End to end: NVIDIA's tritonclient drives a live `router serve` over the Open Inference
Protocol, and its answers equal /predict's for the same rows."""

from __future__ import annotations

from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.configs import write_config
from tests.conftest import IRIS_FEATURES
from tests.e2e.server import Server, serve
from tests.e2e.test_stats import labelled, stats_when, traffic

pytestmark = pytest.mark.e2e


def client_of(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=server.url.removeprefix("http://"))


def matrix_input(rows: np.ndarray, datatype: str = "FP64") -> triton.InferInput:
    tensor = triton.InferInput("input", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows.astype(np.float32 if datatype == "FP32" else np.float64),
                               binary_data=False)
    return tensor


def both_outputs() -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput("label", binary_data=False),
            triton.InferRequestedOutput("probabilities", binary_data=False)]


def test_tritonclient_against_a_live_gateway(tmp_path: Path, champion_dir: Path,
                                             challenger_dir: Path) -> None:
    """Liveness, readiness, metadata, inference with both input forms and both outputs, an
    error, a model named directly; every answer equals /predict's and is logged for feedback."""
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///outcomes.db",
                          traffic={"challenger_percent": 50, "sticky_key": "header:x-user-id"})
    rows = np.array([row for row, _ in traffic(40, seed=7)])
    with serve(config, tmp_path) as server:
        client = client_of(server)
        try:
            assert client.is_server_live() and client.is_server_ready()
            assert client.is_model_ready("exp") and client.is_model_ready("chall", "1")
            assert not client.is_model_ready("nope")
            assert client.get_server_metadata()["name"] == "router"
            metadata = client.get_model_metadata("exp")
            assert metadata["inputs"][0]["name"] == "input"
            assert metadata["inputs"][0]["shape"] == [-1, 4]
            assert [o["name"] for o in metadata["outputs"]] == ["label", "probabilities"]

            ids = []
            for user in ("alice", "bob", "carol", "dave"):
                headers = {"x-user-id": user}
                expected = httpx.post(f"{server.url}/predict",
                                      json={"instances": rows.tolist()}, headers=headers,
                                      timeout=30).json()
                labels = [p["prediction"] for p in expected["predictions"]]
                classes = sorted(expected["predictions"][0]["probabilities"])
                probabilities = [[p["probabilities"][c] for c in classes]
                                 for p in expected["predictions"]]

                result = client.infer("exp", [matrix_input(rows)], outputs=both_outputs(),
                                      headers=headers)
                response = result.get_response()
                assert response["parameters"]["variant"] == expected["variant"]
                assert [str(x) for x in result.as_numpy("label").tolist()] == labels
                got = result.as_numpy("probabilities")
                assert got.shape == (40, 3)
                output = next(o for o in response["outputs"] if o["name"] == "probabilities")
                assert output["parameters"]["classes"] == classes
                assert got.tolist() == probabilities
                ids.append(response["id"])

                # One 1-D tensor per feature, and the outputs left to the server.
                columns = []
                for j, name in enumerate(IRIS_FEATURES):
                    column = triton.InferInput(name, [len(rows)], "FP64")
                    column.set_data_from_numpy(rows[:, j].copy(), binary_data=False)
                    columns.append(column)
                by_feature = client.infer("exp", columns, headers=headers)
                assert [str(x) for x in by_feature.as_numpy("label").tolist()] == labels
                assert by_feature.as_numpy("probabilities").tolist() == probabilities

            with pytest.raises(InferenceServerException) as error:
                client.infer("exp", [matrix_input(rows[:, :3])])
            assert error.value.status() == "422"
            assert "expected [rows, 4]" in error.value.message()

            binary = triton.InferInput("input", [1, 4], "FP64")
            binary.set_data_from_numpy(rows[:1])  # the client's default: binary tensor data
            with pytest.raises(InferenceServerException) as error:
                client.infer("exp", [binary])
            assert error.value.status() == "415"
            assert "binary_data=False" in error.value.message()

            named = client.infer("chall", [matrix_input(rows[:2], "FP32")],
                                 outputs=both_outputs(), request_id="qa-1")
            assert named.get_response()["id"] == "qa-1"
            assert named.get_response()["parameters"]["variant"] == "challenger"
        finally:
            client.close()

        # Every V2 row is logged under <id>:<index>: feedback on them is joined.
        feedback = [{"request_id": f"{request_id}:{i}", "label": label}
                    for request_id in ids for i, (_, label) in enumerate(traffic(40, seed=7))]
        assert httpx.post(f"{server.url}/feedback", json={"feedback": feedback},
                          timeout=30).status_code == 202
        # 4 users' /predict batches stay unlabelled: 160 labelled rows are the V2 ones.
        body = stats_when(server, lambda b: labelled(b) == 160)
    assert labelled(body) == 160
    assert body["variants"]["challenger"]["forced"] == 2
