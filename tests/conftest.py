"""Session fixtures: tiny models trained once and saved as model directories with save_model."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from router.artifacts import save_model
from tests.fixture_models import FAIL_ENV, FailingClassifier, SlowClassifier

IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
DIABETES_FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")


@pytest.fixture(scope="session")
def iris_data() -> tuple[np.ndarray, np.ndarray]:
    """Iris as (X float64 in IRIS_FEATURES order, y as the string labels setosa/...)."""
    data = load_iris()
    return np.asarray(data.data, dtype=np.float64), np.asarray(data.target_names)[data.target]


@pytest.fixture(scope="session")
def diabetes_data() -> tuple[np.ndarray, np.ndarray]:
    """The diabetes regression data as (X float64 in DIABETES_FEATURES order, y float64)."""
    data = load_diabetes()
    return np.asarray(data.data, dtype=np.float64), np.asarray(data.target, dtype=np.float64)


@pytest.fixture(scope="session")
def save_iris_model(
    tmp_path_factory: pytest.TempPathFactory, iris_data: tuple[np.ndarray, np.ndarray]
) -> Callable[..., Path]:
    """Fit ``StandardScaler + final`` on iris and save it as ``<tmp>/<name>/1``."""

    def save(name: str, final: Any) -> Path:
        X, y = iris_data
        model = Pipeline([("scale", StandardScaler()), ("model", final)]).fit(X, y)
        directory = tmp_path_factory.mktemp("models") / name / "1"
        return save_model(
            model,
            directory,
            name=name,
            version="1",
            X_train=X,
            y_train=y,
            feature_names=IRIS_FEATURES,
            metrics={"accuracy": float(model.score(X, y))},
        )

    return save


@pytest.fixture(scope="session")
def champion_dir(save_iris_model: Callable[..., Path]) -> Path:
    """iris-rf: StandardScaler + a 10-tree random forest (has predict_proba)."""
    return save_iris_model("iris-rf", RandomForestClassifier(n_estimators=10, random_state=0))


@pytest.fixture(scope="session")
def challenger_dir(save_iris_model: Callable[..., Path]) -> Path:
    """iris-gb: StandardScaler + 20 depth-2 gradient-boosted trees (has predict_proba)."""
    return save_iris_model(
        "iris-gb", GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0)
    )


@pytest.fixture(scope="session")
def no_proba_dir(save_iris_model: Callable[..., Path]) -> Path:
    """iris-svc: StandardScaler + LinearSVC, whose last step has no predict_proba."""
    return save_iris_model("iris-svc", LinearSVC(random_state=0))


@pytest.fixture(scope="session")
def failing_dir(save_iris_model: Callable[..., Path]) -> Path:
    """iris-failing: predict and predict_proba raise RuntimeError (unless ROUTER_TEST_FAIL=0)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FAIL_ENV, "0")  # save_model predicts on the training data
        return save_iris_model("iris-failing", FailingClassifier())


@pytest.fixture(scope="session")
def slow_dir(save_iris_model: Callable[..., Path]) -> Path:
    """iris-slow: each predict/predict_proba call sleeps ROUTER_TEST_SLEEP_MS (default 50)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROUTER_TEST_SLEEP_MS", "0")  # no need to wait while saving
        return save_iris_model("iris-slow", SlowClassifier())


@pytest.fixture(scope="session")
def regressor_dir(
    tmp_path_factory: pytest.TempPathFactory, diabetes_data: tuple[np.ndarray, np.ndarray]
) -> Path:
    """diabetes-ridge: StandardScaler + Ridge on the diabetes data (a regression pipeline)."""
    X, y = diabetes_data
    model = Pipeline([("scale", StandardScaler()), ("model", Ridge(alpha=1.0))]).fit(X, y)
    directory = tmp_path_factory.mktemp("models") / "diabetes-ridge" / "1"
    return save_model(
        model,
        directory,
        name="diabetes-ridge",
        version="1",
        X_train=X,
        y_train=y,
        feature_names=DIABETES_FEATURES,
        metrics={"r2": float(model.score(X, y))},
    )


POSTGRES_ADMIN_URL = os.environ.get("ROUTER_TEST_POSTGRES",
                                    "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a reachable PostgreSQL; skipped locally without one, never in CI."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and unreachable: {exc}")
        pytest.skip(f"no PostgreSQL at {POSTGRES_ADMIN_URL}: {exc}")
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A new, empty database for one test, dropped afterwards."""
    import psycopg

    name = f"router_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = postgres_server.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Builds in-process gateways (TestClient runs the lifespan) from config keywords."""
    from starlette.testclient import TestClient

    from router.gateway import create_app
    from tests.configs import write_config

    clients: list[TestClient] = []

    def make(**kwargs: Any) -> TestClient:
        path = write_config(tmp_path, **kwargs)
        client = TestClient(create_app(path, base_dir=tmp_path), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
