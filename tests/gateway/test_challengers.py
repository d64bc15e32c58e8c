"""Several challengers in ab mode: each user served by the arm that owns its bucket, under the
challenger's name; the override header and the V2 route reach each one by name."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from router.serving.assignment import assign_arm
from tests.gateway.test_app import named_row, records


def two_challengers(make_client: Any, champion: Path, first: Path, second: Path,
                    percents: tuple[float, float] = (30, 30), **sections: Any) -> Any:
    return make_client(champion=champion, challengers=[
        {"name": "gb", "path": str(first), "percent": percents[0]},
        {"name": "svc", "path": str(second), "percent": percents[1]}],
        traffic={"sticky_key": "header:x-user-id", "override_header": "x-router-variant"},
        **sections)


def test_each_user_is_served_by_the_arm_of_its_bucket(make_client: Any, champion_dir: Path,
                                                      challenger_dir: Path,
                                                      no_proba_dir: Path) -> None:
    """The answer's variant (and X-Variant) is the listed challenger's name, the one the
    layout gives the user; the model field is that challenger's, and the log says the same."""
    client = two_challengers(make_client, champion_dir, challenger_dir, no_proba_dir)
    row = {"features": named_row(champion_dir)}
    served: Counter[str] = Counter()
    for i in range(120):
        user = f"user-{i}"
        response = client.post("/predict", json=row, headers={"x-user-id": user})
        assert response.status_code == 200, response.text
        arm = assign_arm("exp", user, [30, 30])
        expected = "champion" if arm is None else ("gb", "svc")[arm]
        assert response.headers["x-variant"] == expected == response.json()["variant"]
        assert response.json()["model"] == {"champion": "champ"}.get(expected, expected)
        served[expected] += 1
    assert set(served) == {"champion", "gb", "svc"}
    assert Counter(r.variant for r in records(client)) == served


def test_the_override_header_names_a_listed_challenger(make_client: Any, champion_dir: Path,
                                                       challenger_dir: Path,
                                                       no_proba_dir: Path) -> None:
    """A listed challenger's name forces it; an unknown name lists every variant."""
    client = two_challengers(make_client, champion_dir, challenger_dir, no_proba_dir, (0, 0))
    row = {"features": named_row(champion_dir)}
    response = client.post("/predict", json=row, headers={"x-router-variant": "svc"})
    assert response.headers["x-variant"] == "svc"
    refused = client.post("/predict", json=row, headers={"x-router-variant": "lr"})
    assert refused.status_code == 422
    assert "champion, gb, svc, champ" in refused.json()["message"]
    assert [(r.variant, r.forced) for r in records(client)] == [("svc", True)]


def test_v2_reaches_each_challenger_by_name(make_client: Any, champion_dir: Path,
                                            challenger_dir: Path, no_proba_dir: Path) -> None:
    """/v2/models/{name} takes a listed challenger's name; the experiment's metadata lists
    every variant."""
    client = two_challengers(make_client, champion_dir, challenger_dir, no_proba_dir)
    assert client.get("/v2/models/gb/ready").json() == {"name": "gb", "ready": True}
    models = client.get("/v2/models/exp").json()["parameters"]["models"]
    assert list(models) == ["champion", "gb", "svc"]
    assert models["svc"]["name"] == "svc"


def test_a_challenger_whose_features_differ_is_refused_naming_its_entry(
        make_client: Any, tmp_path: Path, champion_dir: Path, challenger_dir: Path,
        regressor_dir: Path) -> None:
    """Every challenger must take the champion's features: the fault names the list entry."""
    from router.config import load_config
    from router.errors import ConfigError
    from router.serving.registry import ModelRegistry
    from router.serving.snapshot import load_models
    from tests.configs import write_config

    path = write_config(tmp_path, champion=champion_dir, challengers=[
        {"name": "gb", "path": str(challenger_dir), "percent": 10},
        {"name": "ridge", "path": str(regressor_dir), "percent": 10}])
    try:
        load_models(load_config(path, base_dir=tmp_path), ModelRegistry())
    except ConfigError as exc:
        assert [p.path for p in exc.problems] == ["challengers[1].path"] * 2
    else:
        raise AssertionError("a regressor with other features was accepted")


def test_admin_switches_name_the_challenger(make_client: Any, champion_dir: Path,
                                            challenger_dir: Path, no_proba_dir: Path,
                                            monkeypatch: Any) -> None:
    """POST /admin/rollback and /admin/promote take {"challenger": name}: svc stopped alone,
    then gb promoted; an unknown name is a 422 naming the field and the choices."""
    monkeypatch.setenv("ROUTER_ADMIN_TOKEN", "s3cret")
    client = two_challengers(make_client, champion_dir, challenger_dir, no_proba_dir)
    auth = {"authorization": "Bearer s3cret"}
    unknown = client.post("/admin/promote", json={"challenger": "lr"}, headers=auth)
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0] == {"field": "challenger", "got": "lr",
                                           "message": "one of gb, svc"}
    assert unknown.json()["message"] == ("challenger 'lr' names no challenger of this "
                                         "gateway; it serves gb, svc (challengers)")
    stopped = client.post("/admin/rollback", json={"challenger": "svc", "reason": "slow"},
                          headers=auth)
    assert stopped.status_code == 200, stopped.text
    assert (stopped.json()["from"], stopped.json()["to"]) == ("svc", "champ")
    shares = {c["name"]: c["percent"] for c in stopped.json()["config"]["challengers"]}
    assert shares == {"gb": 30.0, "svc": 0.0} and stopped.json()["config"]["mode"] == "ab"
    promoted = client.post("/admin/promote", json={"challenger": "gb"}, headers=auth)
    assert promoted.status_code == 200, promoted.text
    config = promoted.json()["config"]
    assert config["champion"]["name"] == "gb" and config["previous"]["name"] == "champ"
    assert [c["name"] for c in config["challengers"]] == ["svc"] and config["mode"] == "single"
    history = client.get("/history").json()["history"]
    assert [(h["action"], h["details"].get("challenger")) for h in history] == [
        ("rollback", "svc"), ("promote", "gb")]


def test_an_unknown_challenger_over_http_names_the_model_served(
        make_client: Any, champion_dir: Path, challenger_dir: Path, monkeypatch: Any) -> None:
    """The one challenger of `challenger:` is named by its model and its role, both of which
    the body's challenger may give."""
    monkeypatch.setenv("ROUTER_ADMIN_TOKEN", "s3cret")
    client = make_client(champion=champion_dir, challenger=challenger_dir)
    unknown = client.post("/admin/promote", json={"challenger": "zzz"},
                          headers={"authorization": "Bearer s3cret"})
    assert unknown.status_code == 422
    assert unknown.json()["message"] == ("challenger 'zzz' names no challenger of this "
                                         "gateway; it serves chall (challenger)")
    assert unknown.json()["detail"][0]["message"] == "one of chall, challenger"


def test_a_failing_challenger_falls_back_and_is_counted_under_its_name(
        make_client: Any, champion_dir: Path, challenger_dir: Path, failing_dir: Path) -> None:
    """A listed challenger that fails: the champion answers, /stats counts the failures and
    fallbacks under that challenger, /metrics its model errors under its name."""
    client = two_challengers(make_client, champion_dir, challenger_dir, failing_dir, (30, 30))
    row = {"features": named_row(champion_dir)}
    failed = 0
    for i in range(60):
        user = f"user-{i}"
        response = client.post("/predict", json=row, headers={"x-user-id": user})
        assert response.status_code == 200
        if assign_arm("exp", user, [30, 30]) == 1:
            failed += 1
            assert response.headers["x-variant"] == "champion"
    assert failed > 0
    records(client)  # flushed to the store
    stats = client.get("/stats").json()
    broken = stats["variants"]["svc"]
    assert (broken["errors"], broken["fallbacks"], broken["requests"]) == (failed,) * 3
    assert stats["variants"]["gb"]["fallbacks"] == 0
    metrics = client.get("/metrics").text
    assert f'router_model_errors_total{{variant="svc"}} {failed}.0' in metrics
    assert f"router_challenger_fallbacks_total {failed}.0" in metrics
    assert any(line.startswith("router_model_info{") and 'role="svc"' in line
               and 'model="svc"' in line for line in metrics.splitlines())
