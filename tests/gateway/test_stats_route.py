"""GET /stats in-process: the report's keys, query overrides, refusals, the shadow counters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from router.gateway.state import GatewayState

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}




def gateway(client: TestClient) -> GatewayState:
    return client.app.state.gateway  # type: ignore[attr-defined, no-any-return]


def send(client: TestClient, n: int) -> None:
    """n users' requests, each labelled with the class the model answered (all correct)."""
    labels = []
    for i in range(n):
        body = client.post("/predict", json={"features": ROW},
                           headers={"x-user-id": f"user-{i}"}).json()
        labels.append({"request_id": body["request_id"], "label": body["prediction"]})
    assert client.post("/feedback", json={"feedback": labels}).status_code == 202
    gateway(client).writer.flush()


def test_stats_answers_every_spec_key(make_client: Any, champion_dir: Path,
                                      challenger_dir: Path) -> None:
    """/stats has SPEC.md's keys, counts what was served and names the phase."""
    client = make_client(champion=champion_dir, challenger=challenger_dir,
                         traffic={"challenger_percent": 50, "sticky_key": "header:x-user-id"})
    send(client, 60)
    response = client.get("/stats")
    assert response.status_code == 200
    body = response.json()
    assert {"experiment", "mode", "config_revision", "variants", "comparison", "drift",
            "decision", "phase", "unknown_feedback_ids"} <= set(body)
    assert body["config_revision"] == 1 and body["phase"]["revisions"] == [1]
    variants = body["variants"]
    assert variants["champion"]["requests"] + variants["challenger"]["requests"] == 60
    for variant in variants.values():
        assert {"model", "version", "requests", "shadow", "errors", "error_rate", "latency_ms",
                "labelled", "metric", "metric_ci95", "prediction_distribution"} <= set(variant)
        assert variant["metric"] == 1.0
    assert {"metric", "test", "difference", "difference_ci95", "p_value",
            "sequential_p_value", "significant", "samples_needed_per_variant", "srm",
            "paired"} <= set(body["comparison"])
    assert {"features", "prediction_psi"} <= set(body["drift"])
    assert body["decision"]["action"] == "continue"


def test_query_overrides_and_refusals(make_client: Any, champion_dir: Path,
                                      challenger_dir: Path) -> None:
    """?metric= and ?alpha= replay the verdict; values that cannot apply are a 422."""
    client = make_client(champion=champion_dir, challenger=challenger_dir,
                         traffic={"challenger_percent": 50})
    send(client, 20)
    body = client.get("/stats?metric=log_loss&alpha=0.2").json()
    assert body["comparison"]["metric"] == "log_loss" and body["comparison"]["alpha"] == 0.2
    # float() would also read other scripts' digits (Arabic-Indic, below) and underscores, which
    # ?limit= (ASCII digits only) refuses: a query number is written the one way.
    for query in ("metric=mae", "metric=auc", "alpha=2", "alpha=abc", "alpha=%D9%A0.%D9%A0%D9%A5",
                  "alpha=0.0_5", "alpha=%200.05"):
        response = client.get(f"/stats?{query}")
        assert response.status_code == 422, query
        assert response.json()["error"] == "invalid_input"


def test_shadow_counters_are_shown_under_the_challenger(make_client: Any, champion_dir: Path,
                                                        challenger_dir: Path) -> None:
    """In shadow mode the mirror's counters (offered, done, dropped...) appear in /stats."""
    client = make_client(champion=champion_dir, challenger=challenger_dir, mode="shadow")

    class Mirror:
        def counts(self) -> dict[str, int]:
            return {"offered": 3, "done": 2, "dropped": 1, "failed": 0, "timed_out": 0,
                    "queue_depth": 0}

    state = gateway(client)
    real = getattr(state, "shadow", None)
    state.shadow = Mirror()  # type: ignore[assignment]
    try:
        body = client.get("/stats").json()
    finally:
        state.shadow = real  # type: ignore[assignment]
    challenger = body["variants"]["challenger"]
    assert challenger["shadow"] is True
    assert challenger["shadow_calls"]["dropped"] == 1
    assert body["comparison"]["paired"]["n"] == 0
