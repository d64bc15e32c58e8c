"""`router skew`: the logged inputs of a config's store against an offline CSV, as a table or
JSON, and each fault of the file or the options as one line and a non-zero exit."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from router.cli import main
from router.monitoring import config_skew
from router.outcomes import PredictionRecord, SQLiteStore
from tests.configs import write_config
from tests.test_cli import imported_after, run

NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
LOGGED = {"a": (5.1, 3.5, 1.4, 0.2), "b:0": (6.0, 3.0, 4.8, 1.8), "b:1": (5.9, 3.0, 5.1, 1.8)}


@pytest.fixture
def config(tmp_path: Path, champion_dir: Path) -> Path:
    """A config whose SQLite store logged three rows (one request and a batch of two)."""
    store = SQLiteStore(tmp_path / "outcomes.db")
    store.write_predictions([PredictionRecord(
        request_id=request_id, ts=1.0, experiment="exp", revision=1, variant="champion",
        model="champ", version="1", features=features, prediction="setosa", probability=0.9,
        latency_ms=1.0) for request_id, features in LOGGED.items()])
    store.close()
    return write_config(tmp_path, champion=champion_dir, mode="single",
                        store=f"sqlite:///{tmp_path / 'outcomes.db'}")


def offline_csv(path: Path, rows: list[list[object]] | None = None) -> Path:
    """The logged rows with sepal_width offset by 0.1, and an id never logged."""
    if rows is None:
        rows = [["request_id", *reversed(NAMES)]]
        rows += [[i, f[3], f[2], f[1] + 0.1, f[0]] for i, f in LOGGED.items()]
        rows.append(["never", 1, 1, 1, 1])
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_the_table_marks_the_offset_feature(capsys: pytest.CaptureFixture[str], config: Path,
                                            tmp_path: Path) -> None:
    """Without --json: the counts, then a line per feature, the offset one marked SKEWED."""
    code, out, err = run(capsys, "skew", "--config", str(config), "--features",
                         str(offline_csv(tmp_path / "offline.csv")))
    assert code == 0 and err == ""
    assert "rows joined 3, missing 1" in out
    marks = {line.split()[0]: line.split()[-1] for line in out.splitlines()
             if line.split() and line.split()[0] in NAMES}
    assert marks == {"sepal_length": "no", "sepal_width": "SKEWED", "petal_length": "no",
                     "petal_width": "no"}
    assert "skewed: sepal_width" in out


def test_json_is_the_python_functions_report(capsys: pytest.CaptureFixture[str], config: Path,
                                             tmp_path: Path) -> None:
    """--json prints config_skew's report: exactly rows_joined, rows_missing and per feature
    mismatch_share, max_abs_diff, mean_diff, skewed; --rtol and --atol reach the rule."""
    path = offline_csv(tmp_path / "offline.csv")
    code, out, _ = run(capsys, "skew", "--config", str(config), "--features", str(path),
                       "--json")
    report = json.loads(out)
    assert code == 0 and report == config_skew(config, path)
    assert set(report) == {"rows_joined", "rows_missing", "features"}
    assert list(report["features"]) == NAMES
    for entry in report["features"].values():
        assert set(entry) == {"mismatch_share", "max_abs_diff", "mean_diff", "skewed"}
    assert report["features"]["sepal_width"]["mean_diff"] == pytest.approx(-0.1)
    code, out, _ = run(capsys, "skew", "--config", str(config), "--features", str(path),
                       "--json", "--atol", "0.2", "--rtol", "0")
    assert code == 0 and not any(e["skewed"] for e in json.loads(out)["features"].values())


@pytest.mark.parametrize(("rows", "message"), [
    ([["request_id", *NAMES, "colour"], ["a", 1, 1, 1, 1, "red"]],
     "{path} has columns that are no feature of the model: colour"),
    ([["request_id", *NAMES[:3]], ["a", 1, 1, 1]], "{path} lacks feature columns: petal_width"),
    ([["request_id", *NAMES], ["a", 1, 1, 1, 1], ["b:0", 1, "n/a", 1, 1]],
     "{path} row 2, column sepal_width: not a number: 'n/a'"),
    ([["request_id", *NAMES], ["x", 1, 1, 1, 1], ["y", 1, 1, 1, 1]],
     "none of the 2 request ids of {path} is in the log"),
    ([], "offline.csv is empty"),
])
def test_a_bad_file_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str], config: Path,
                                           tmp_path: Path, rows: list[list[object]],
                                           message: str) -> None:
    """Unknown or missing columns, a value that is no number, no id in the log, an empty file:
    `router: error: …` on one line naming the file, exit 1."""
    path = offline_csv(tmp_path / "offline.csv", rows)
    code, out, err = run(capsys, "skew", "--config", str(config), "--features", str(path))
    assert code == 1 and out == ""
    assert err.startswith("router: error: ") and err.count("\n") == 1
    assert message.format(path=path) in err


def test_a_file_that_is_no_csv_is_one_line(capsys: pytest.CaptureFixture[str], config: Path,
                                           tmp_path: Path) -> None:
    """Binary bytes (a model file given by mistake) are not a CSV: one line, exit 1."""
    path = tmp_path / "model.joblib"
    path.write_bytes(bytes(range(256)) * 8)
    code, _, err = run(capsys, "skew", "--config", str(config), "--features", str(path))
    assert code == 1 and err.count("\n") == 1 and "is not a UTF-8 CSV file" in err


@pytest.mark.parametrize("option", [["--rtol", "-1"], ["--atol", "nan"],
                                    ["--max-mismatch-share", "1"], ["--alpha", "0"]])
def test_a_bad_option_is_a_usage_error(capsys: pytest.CaptureFixture[str], config: Path,
                                       option: list[str]) -> None:
    """A negative or non-finite tolerance, a share of 1, alpha 0: argparse's exit 2."""
    with pytest.raises(SystemExit) as info:
        main(["skew", "--config", str(config), "--features", "x.csv", *option])
    assert info.value.code == 2 and option[0] in capsys.readouterr().err


def test_skew_imports_no_model_library(config: Path, tmp_path: Path) -> None:
    """`router skew` reads the champion's feature names from its metadata: scikit-learn, the
    web stack and ONNX Runtime stay unimported."""
    outcome, heavy = imported_after("skew", "--config", str(config), "--features",
                                    str(offline_csv(tmp_path / "offline.csv")), "--json")
    assert outcome.startswith("0:"), outcome
    assert not heavy & {"sklearn", "uvicorn", "starlette", "onnxruntime"}, heavy
