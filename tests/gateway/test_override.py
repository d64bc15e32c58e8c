"""traffic.override_header: a request naming its variant is served by it and logged as forced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from tests.gateway.test_app import named_row, records
from tests.polling import eventually

HEADER = "x-router-variant"


def forcing_client(make_client: Any, champion: Path, challenger: Path | None, **traffic: Any
                   ) -> Any:
    return make_client(champion=champion, challenger=challenger,
                       mode="ab" if challenger is not None else "single",
                       traffic={"challenger_percent": 0, "override_header": HEADER, **traffic})


def test_header_is_off_by_default(make_client: Any, champion_dir: Path,
                                  challenger_dir: Path) -> None:
    """Without traffic.override_header the header is an ordinary header: nothing is forced."""
    client = make_client(champion=champion_dir, challenger=challenger_dir,
                         traffic={"challenger_percent": 0})
    response = client.post("/predict", json={"features": named_row(champion_dir)},
                           headers={HEADER: "challenger"})
    assert response.headers["x-variant"] == "champion"
    assert [r.forced for r in records(client)] == [False]


@pytest.mark.parametrize(("named", "variant"), [
    ("challenger", "challenger"), ("Challenger", "challenger"), ("chall", "challenger"),
    ("champion", "champion"), ("champ", "champion"),
])
def test_a_role_or_a_served_name_forces_the_variant(make_client: Any, champion_dir: Path,
                                                    challenger_dir: Path, named: str,
                                                    variant: str) -> None:
    """The header names a role or the YAML's name of a model; /predict, batches and the KServe
    V1 route all follow it, and every row is logged as forced under that variant."""
    client = forcing_client(make_client, champion_dir, challenger_dir)
    row = named_row(champion_dir)
    single = client.post("/predict", json={"features": row}, headers={HEADER: named})
    batch = client.post("/predict", json={"instances": [row, row]}, headers={HEADER: named})
    kserve = client.post("/v1/models/exp:predict", json={"instances": [list(row.values())]},
                         headers={HEADER: named})
    for response in (single, batch, kserve):
        assert response.status_code == 200, response.text
        assert response.headers["x-variant"] == variant
    assert single.json()["variant"] == variant
    logged = records(client)
    assert len(logged) == 4
    assert {(r.variant, r.forced) for r in logged} == {(variant, True)}


@pytest.mark.parametrize("named", ["nobody", "previous", ""])
def test_an_unknown_variant_is_a_422_naming_the_header(make_client: Any, champion_dir: Path,
                                                      challenger_dir: Path, named: str) -> None:
    """A value that names no served variant is refused, naming the header and the choices."""
    client = forcing_client(make_client, champion_dir, challenger_dir)
    response = client.post("/predict", json={"features": named_row(champion_dir)},
                           headers={HEADER: named})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_input"
    assert HEADER in body["message"] and "challenger" in body["message"]
    assert body["detail"][0]["field"] == f"header {HEADER}"
    assert records(client) == []


def test_no_challenger_to_force_in_single_mode(make_client: Any, champion_dir: Path) -> None:
    """With only a champion, naming the challenger is a 422; naming the champion serves."""
    client = forcing_client(make_client, champion_dir, None)
    row = {"features": named_row(champion_dir)}
    assert client.post("/predict", json=row, headers={HEADER: "challenger"}).status_code == 422
    assert client.post("/predict", json=row, headers={HEADER: "champion"}).status_code == 200


def test_with_a_token_required_only_the_admin_token_makes_it_count(
        make_client: Any, champion_dir: Path, challenger_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """override_requires_token: without the admin bearer token (or with a wrong one) the header
    is ignored and the request routed as usual; with it, the variant is forced."""
    monkeypatch.setenv("ROUTER_ADMIN_TOKEN", "s3cret")
    client = forcing_client(make_client, champion_dir, challenger_dir,
                            override_requires_token=True)
    row = {"features": named_row(champion_dir)}
    variants = [
        client.post("/predict", json=row, headers=headers).headers["x-variant"]
        for headers in ({HEADER: "challenger"},
                        {HEADER: "challenger", "Authorization": "Bearer wrong"},
                        {HEADER: "challenger", "Authorization": "Bearer s3cret"})]
    assert variants == ["champion", "champion", "challenger"]
    assert [r.forced for r in records(client)] == [False, False, True]


def test_without_the_admin_token_set_a_required_token_never_matches(
        make_client: Any, champion_dir: Path, challenger_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ROUTER_ADMIN_TOKEN unset: no bearer token can count, not even an empty one."""
    monkeypatch.delenv("ROUTER_ADMIN_TOKEN", raising=False)
    client = forcing_client(make_client, champion_dir, challenger_dir,
                            override_requires_token=True)
    response = client.post("/predict", json={"features": named_row(champion_dir)},
                           headers={HEADER: "challenger", "Authorization": "Bearer "})
    assert response.headers["x-variant"] == "champion"


def test_a_forced_challenger_that_fails_is_a_500_not_a_fallback(
        make_client: Any, champion_dir: Path, failing_dir: Path) -> None:
    """The tester asked for the challenger: its failure is the answer (500, naming it), logged
    as a forced error; the champion does not step in."""
    client = forcing_client(make_client, champion_dir, failing_dir)
    response = client.post("/predict", json={"features": named_row(champion_dir)},
                           headers={HEADER: "challenger"})
    assert response.status_code == 500
    assert response.json()["error"] == "model_failed"
    assert "challenger" in response.json()["message"]
    [logged] = records(client)
    assert (logged.variant, logged.forced, logged.fallback) == ("challenger", True, False)
    assert logged.error is not None


def test_in_shadow_mode_a_forced_request_is_not_mirrored(make_client: Any, champion_dir: Path,
                                                         challenger_dir: Path) -> None:
    """A forced request is answered by its variant alone: no shadow copy, so nothing of it
    can pair up in the shadow comparison; the requests around it are mirrored as usual."""
    client = make_client(champion=champion_dir, challenger=challenger_dir, mode="shadow",
                         traffic={"override_header": HEADER})
    row = {"features": named_row(champion_dir)}
    ids = [client.post("/predict", json=row, headers=headers).json()["request_id"]
           for headers in ({}, {HEADER: "champion"}, {})]
    # The shadow worker starts slowly on a loaded machine.
    logged = eventually(lambda: records(client), lambda r: len(r) >= 5, timeout=300,
                        interval=0.05, what="three answers and two shadow rows logged")
    shadowed = {r.request_id for r in logged if r.shadow}
    assert shadowed == {ids[0], ids[2]}
    assert [(r.variant, r.forced) for r in logged if r.request_id == ids[1]] == [
        ("champion", True)]


def test_a_model_name_with_accents_forces_its_variant(tmp_path: Path, champion_dir: Path,
                                                      challenger_dir: Path) -> None:
    """The header's UTF-8 bytes name the model the YAML calls "modèle", as the Open Inference
    Protocol's path does, and so do the latin-1 bytes Python's ``requests`` would send."""
    from router.gateway.app import create_app
    from router.gateway.override import forced_variant
    from tests.configs import write_config

    path = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                        traffic={"challenger_percent": 0, "override_header": HEADER})
    config = orjson.loads(path.read_bytes())
    config["challenger"]["name"] = "modèle"
    path.write_bytes(orjson.dumps(config))
    with TestClient(create_app(path, base_dir=tmp_path)) as client:
        response = client.post("/predict", json={"features": named_row(champion_dir)},
                               headers={HEADER: "modèle".encode()})
        assert response.status_code == 200, response.text
        assert response.headers["x-variant"] == "challenger"
        snapshot = client.app.state.gateway.snapshots.current
        # The latin-1 bytes straight to the function: a test client would re-encode them.
        latin1 = {HEADER.encode(): "modèle".encode("latin-1")}
        assert forced_variant(snapshot, latin1) == "challenger"
