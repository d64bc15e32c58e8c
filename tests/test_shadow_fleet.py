"""Shadow mode with several challengers: each has its own mirror, queue and worker process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from starlette.testclient import TestClient

from tests.polling import eventually
from tests.test_shadow import ROW, settled, state

# Only a guard against hangs: two worker processes start at once, each importing scikit-learn
# at low priority, which a loaded machine takes minutes over.
DEADLINE_S = 300.0


def test_every_challenger_scores_every_request_in_its_own_worker(
        make_client: Callable[..., TestClient], champion_dir: Path, challenger_dir: Path,
        failing_dir: Path) -> None:
    """Each answered request is mirrored to both challengers; each has a worker process of its
    own, so one that fails every call leaves the other's figures whole; /stats pairs each
    with the champion and shows its own counts."""
    client = make_client(champion=champion_dir, mode="shadow", challengers=[
        {"name": "gb", "path": str(challenger_dir)},
        {"name": "broken", "path": str(failing_dir)}])
    for i in range(12):
        response = client.post("/predict", json={"features": ROW},
                               headers={"x-request-id": f"req-{i}"})
        assert response.status_code == 200 and response.headers["x-variant"] == "champion"
    fleet = state(client).shadow
    assert fleet is not None
    eventually(lambda: {v: settled(c) for v, c in fleet.counts_by_variant().items()},
               lambda seen: seen == {"gb": 12, "broken": 12}, timeout=DEADLINE_S,
               what="both challengers' shadow calls settled")
    counts = fleet.counts_by_variant()
    assert (counts["gb"]["done"], counts["broken"]["failed"]) == (12, 12)
    assert fleet.counts()["offered"] == 24
    gb, broken = fleet.mirror("gb"), fleet.mirror("broken")
    assert gb is not None and broken is not None and gb.scorer is not broken.scorer
    pids = {getattr(m.scorer, "pid", None) for m in (gb, broken)}
    assert len(pids) == 2 and None not in pids  # two worker processes
    state(client).writer.flush()
    records = state(client).store.prediction_records()
    mirrored = {(r.variant, r.request_id) for r in records if r.shadow}
    assert mirrored == {(v, f"req-{i}") for v in ("gb", "broken") for i in range(12)}
    for i in range(12):
        client.post("/feedback", json={"request_id": f"req-{i}", "label": "setosa"})
    state(client).writer.flush()
    stats = client.get("/stats").json()
    assert stats["variants"]["gb"]["shadow"] and stats["variants"]["gb"]["requests"] == 12
    assert stats["variants"]["gb"]["shadow_calls"]["done"] == 12
    assert stats["variants"]["broken"]["shadow_calls"]["failed"] == 12
    assert stats["comparisons"]["gb"]["paired"]["n"] == 12
    assert stats["comparisons"]["broken"]["paired"]["n"] == 0
    assert stats["srm"] is None
