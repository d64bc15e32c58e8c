"""The CLI as a Unix tool: exit codes, one-line errors on stderr, output on stdout."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from router.cli import build_parser, main
from router.outcomes import HistoryEntry, open_store
from tests.configs import write_config
from tests.e2e.server import REPO_ROOT


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_ok(capsys: pytest.CaptureFixture[str], tmp_path: Path, champion_dir: Path,
                     challenger_dir: Path) -> None:
    """A valid file: exit 0 and one line naming what would be served."""
    path = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir)
    code, out, err = run(capsys, "validate", str(path))
    assert code == 0 and err == ""
    assert "ok" in out and "champion champ:1" in out and "challenger chall:1" in out


def test_validate_lists_each_problem_with_file_and_line(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, champion_dir: Path) -> None:
    """Every problem is one `FILE:LINE: key: message` line on stderr, exit 1."""
    path = tmp_path / "bad.yaml"
    path.write_text(f"experiment: e\nmode: ab\nchampion: {{name: a, path: {champion_dir}}}\n"
                    "challenger: {name: b, path: nowhere/1}\n"
                    "traffic: {challenger_percent: 101}\n")
    code, out, err = run(capsys, "validate", str(path))
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert lines[0] == f"{path}:5: traffic.challenger_percent: must be between 0 and 100, got 101"
    assert len(lines) == 1  # model loading is checked once the file itself is valid
    path.write_text(path.read_text().replace("101", "10"))
    code, _, err = run(capsys, "validate", str(path))
    assert code == 1
    assert err.startswith(f"{path}:4: challenger.path: ") and "nowhere" in err
    assert "Traceback" not in err


def test_validate_names_each_listed_challenger(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path, champion_dir: Path,
                                               challenger_dir: Path) -> None:
    """With challengers: the ok line names each one; a missing directory names its entry."""
    path = tmp_path / "multi.yaml"
    path.write_text(f"experiment: e\nmode: ab\nchampion: {{name: a, path: {champion_dir}}}\n"
                    f"challengers:\n  - {{name: gb, path: {challenger_dir}, percent: 10}}\n"
                    "  - {name: lr, path: nowhere/1, percent: 10}\n")
    code, _, err = run(capsys, "validate", str(path))
    assert code == 1 and err.startswith(f"{path}:6: challengers[1].path: ")
    path.write_text(path.read_text().replace("nowhere/1", str(challenger_dir)).replace(
        "lr, path", "gb2, path"))
    code, out, err = run(capsys, "validate", str(path))
    assert code == 0, err
    assert "challenger gb:1" in out and "challenger gb2:1" in out


def test_validate_lists_problems_in_line_order(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    """Problems come top to bottom, whichever check found them; no key where none is at fault."""
    path = tmp_path / "bad.yaml"
    path.write_text("experiment: e\nmode: ab\ntraffic: {challenger_percent: 130}\n"
                    "champion: {name: a, path: m/a}\nbogus: 1\n")
    code, _, err = run(capsys, "validate", str(path))
    assert code == 1
    assert [line.split(":")[1] for line in err.splitlines()] == ["1", "3", "5"]
    assert "bogus: unknown key" in err.splitlines()[2]
    code, _, err = run(capsys, "validate", str(tmp_path / "none.yaml"))
    assert code == 1 and err == f"{tmp_path / 'none.yaml'}: file not found\n"


def test_promote_and_rollback_name_a_challenger(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path, champion_dir: Path,
                                                challenger_dir: Path, no_proba_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """--challenger picks one of several; without it promote is refused, naming them."""
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path, champion=champion_dir, challengers=[
        {"name": "gb", "path": str(challenger_dir), "percent": 10},
        {"name": "svc", "path": str(no_proba_dir), "percent": 10}])
    code, _, err = run(capsys, "promote", "--config", str(path))
    assert code == 1 and "name the challenger to promote: gb, svc" in err
    code, out, _ = run(capsys, "rollback", "--config", str(path), "--challenger", "svc")
    # svc alone stopped: gb keeps its users.
    assert code == 0 and out.startswith("rolled back svc: its share is now 0; champ and gb "
                                        "serve;")
    code, out, _ = run(capsys, "promote", "--config", str(path), "--challenger", "gb")
    assert code == 0 and out.startswith("promoted: gb now serves (was champ)")


def test_a_rollback_of_one_shadow_challenger_says_the_others_stay(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, champion_dir: Path,
        challenger_dir: Path, no_proba_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In shadow mode the challenger rolled back leaves the file; the others stay mirrored."""
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path, champion=champion_dir, mode="shadow", challengers=[
        {"name": name, "path": str(directory)}
        for name, directory in (("gb", challenger_dir), ("svc", no_proba_dir),
                                ("gb2", challenger_dir))])
    code, out, _ = run(capsys, "rollback", "--config", str(path), "--challenger", "svc")
    assert code == 0 and out.startswith("rolled back svc: no longer mirrored; champ serves, "
                                        "gb and gb2 still in shadow;")


@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_an_unknown_challenger_is_blamed_on_the_flag_naming_the_models(
        command: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, champion_dir: Path,
        challenger_dir: Path, no_proba_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--challenger naming no challenger: the flag is the mistake, not a key of the file, and
    the choices are the models' names (the one under `challenger:` with its role, which
    names it too); the file is left as it was."""
    monkeypatch.chdir(tmp_path)
    one = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                       name="one.yaml")
    several = write_config(tmp_path, champion=champion_dir, name="several.yaml", challengers=[
        {"name": "gb", "path": str(challenger_dir), "percent": 10},
        {"name": "svc", "path": str(no_proba_dir), "percent": 10}])
    for path, served in ((one, "chall (challenger)"), (several, "gb, svc (challengers)")):
        text = path.read_text()
        code, out, err = run(capsys, command, "--config", str(path), "--challenger", "zzz")
        assert (code, out, err) == (1, "", f"router: error: --challenger 'zzz' names no "
                                           f"challenger in {path}; it serves {served}\n")
        assert path.read_text() == text
    code, out, _ = run(capsys, command, "--config", str(one), "--challenger", "challenger")
    assert code == 0, out


def test_history_is_the_configs_experiments_own(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path, champion_dir: Path,
                                                challenger_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Two experiments logging to one store: each switch names its experiment, `--config`
    reads that experiment's switches alone, `--store` every one of them."""
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    one = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                       experiment="one", store=store, name="one.yaml")
    two = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                       experiment="two", store=store, name="two.yaml")
    assert run(capsys, "promote", "--config", str(one), "--reason", "one's")[0] == 0
    assert run(capsys, "rollback", "--config", str(two), "--reason", "two's")[0] == 0
    for config, expected in ((one, [("one", "promote")]), (two, [("two", "rollback")])):
        code, out, _ = run(capsys, "history", "--config", str(config), "--json")
        assert code == 0
        assert [(e["experiment"], e["action"]) for e in json.loads(out)["history"]] == expected
    code, out, _ = run(capsys, "history", "--store", store, "--json")
    entries = json.loads(out)["history"]
    assert [e["experiment"] for e in entries] == ["one", "two"]
    # Each switch carries the figures it was made on (SPEC.md: "with the figures behind
    # each"), as a rollout's moves do.
    assert all(e["details"]["decision"] == "continue" and "p_value" in e["details"]
               for e in entries)


def test_missing_config_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A missing file for a command that needs it: `router: error: …`, exit 1."""
    code, _, err = run(capsys, "promote", "--config", str(tmp_path / "none.yaml"))
    assert code == 1 and err.startswith("router: error: ") and err.count("\n") == 1


@pytest.mark.parametrize("command", [
    ["history", "--store", "sqlite:///var/nope.db"],
    ["history", "--config", "{config}"],
    ["stats", "--store", "sqlite:///var/nope.db", "--config", "{config}"],
    ["stats", "--config", "{config}"],
    ["skew", "--config", "{config}", "--features", "{features}"],
])
def test_a_command_that_reads_a_store_creates_no_missing_one(
        command: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path,
        champion_dir: Path, challenger_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mistyped SQLite path given to a command that only reads: one line naming the file,
    exit 1, and no empty database left behind to read zeros from next time."""
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "var" / "nope.db"
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store=f"sqlite:///{missing}")
    features = tmp_path / "features.csv"
    features.write_text("request_id,sepal_length,sepal_width,petal_length,petal_width\n"
                        "a,5.1,3.5,1.4,0.2\n")
    argv = [arg.format(config=config, features=features) for arg in command]
    code, out, err = run(capsys, *argv)
    assert (code, out) == (1, "")
    assert err.startswith("router: error: ") and err.count("\n") == 1, err
    assert str(missing) in err
    assert not missing.exists() and not missing.parent.exists()


def test_models_list(capsys: pytest.CaptureFixture[str], champion_dir: Path,
                     challenger_dir: Path) -> None:
    """`router models list DIR` prints a header and one row per model directory."""
    code, out, _ = run(capsys, "models", "list", str(champion_dir.parent.parent))
    assert code == 0
    header, *rows = out.strip().splitlines()
    assert header.split()[:3] == ["NAME", "VERSION", "TASK"]
    assert len(rows) == 1 and rows[0].split()[:3] == ["iris-rf", "1", "classification"]


def test_models_list_of_an_empty_dir_fails(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    """No model directories is an error, not an empty table."""
    code, _, err = run(capsys, "models", "list", str(tmp_path))
    assert code == 1 and "no model directories" in err


def test_train_demo_twice_is_a_clear_error(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    """train-demo refuses to overwrite, on one line naming the option to pass once (not the
    Python API's argument), and --force retrains."""
    assert run(capsys, "train-demo", "--dir", str(tmp_path))[0] == 0
    code, _, err = run(capsys, "train-demo", "--dir", str(tmp_path))
    model = tmp_path / "models" / "breast-cancer-lr" / "1" / "model.joblib"
    assert (code, err) == (1, f"router: error: {model} already exists; use --force to "
                              "replace it\n")
    assert run(capsys, "train-demo", "--dir", str(tmp_path), "--force")[0] == 0


def test_train_demo_prints_a_serve_command_that_works_from_anywhere(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The config's model paths are relative to the directory it is served from: the command
    train-demo prints, run from another directory, finds the models it trained."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, _ = run(capsys, "train-demo", "--dir", str(tmp_path / "td"))
    assert code == 0
    command = out.strip().splitlines()[-1].split("serve it with: ")[1]
    assert command.endswith("router serve --config configs/router.yaml")
    # validate loads what serve would, and returns.
    check = command.replace("router serve --config",
                            f"{shlex.quote(sys.executable)} -m router.cli validate")
    done = subprocess.run(check, shell=True, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """Each subcommand answers --help with exit 0."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0, name
    capsys.readouterr()


def test_usage_mistakes_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown commands and bad flag values are argparse usage errors: exit 2."""
    for argv in (["nope"], ["serve", "--workers", "0"], []):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "expected"), [
    (["stats", "--metric", "bogus"],
     "argument --metric: invalid choice: 'bogus' (choose from 'accuracy', 'log_loss', 'mae', "
     "'rmse') (see router stats --help)"),
    (["serve", "--port", "abc"],
     "argument --port: must be a port from 0 to 65535, got 'abc' (see router serve --help)"),
    (["history", "--limit", "0"],
     "argument --limit: must be at least 1, got 0 (see router history --help)"),
    (["stats", "--alpha", "2"],
     "argument --alpha: must lie strictly between 0 and 1, got 2 (see router stats --help)"),
    (["stats", "--outcomes", "log.csv", "--challenger-percent", "150"],
     "argument --challenger-percent: must lie between 0 and 100, got 150 "
     "(see router stats --help)"),
    (["stats", "--outcomes", "log.csv", "--url", "http://127.0.0.1:1"],
     "give one of --url, --store/--config or --outcomes (see router stats --help)"),
    (["validate", "FILE", "extra"],
     "unrecognized arguments: extra (see router validate --help)"),
    (["models", "list", "DIR", "extra"],
     "unrecognized arguments: extra (see router models list --help)"),
    (["serve", "--bogus", "--config", "x.yaml"],
     "unrecognized arguments: --bogus (see router serve --help)"),
    ([], "the following arguments are required: COMMAND (see router --help)"),
])
def test_a_usage_mistake_is_one_line_naming_the_help_to_read(
        argv: list[str], expected: str, tmp_path: Path) -> None:
    """argparse's mistakes read as every other error of the command: one line on stderr,
    `router: error: …`, with the help of the command that was mistyped (not argparse's usage
    block, nor the top-level usage for a subcommand's extra argument); exit 2."""
    done = subprocess.run([sys.executable, "-m", "router.cli", *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"router: error: {expected}\n")


@pytest.mark.parametrize("command", ["serve", "demo"])
@pytest.mark.parametrize("port", ["99999", "65536", "-1", "http"])
def test_a_port_outside_1_to_65535_is_a_usage_mistake(
        command: str, port: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--port takes a TCP port: anything else is refused by the parser, naming the option,
    rather than bound modulo 65536."""
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--port", port])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --port: must be a port from " in err and f"got {port!r}" in err, err


def test_port_bounds_that_mean_something_are_taken() -> None:
    """1 and 65535 are ports; 0 is one for `router serve` alone: any free port, which
    uvicorn's log names. The demo must know its address to send traffic there."""
    parser = build_parser()
    for command in ("serve", "demo"):
        for port in (1, 65535):
            assert parser.parse_args([command, "--port", str(port)]).port == port
    assert parser.parse_args(["serve", "--port", "0"]).port == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--port", "0"])


HEAVY = ("sklearn", "scipy", "numpy", "uvicorn", "starlette", "onnxruntime")


def imported_after(*argv: str) -> tuple[str, set[str]]:
    """Run the CLI in a fresh interpreter; its output and which heavy modules it imported."""
    script = ("import sys, json\nfrom router.cli import main\n"
              f"try:\n    code = main({list(argv)!r})\n"
              "except SystemExit as exit:\n    code = exit.code\n"
              f"print(json.dumps([code, [m for m in {HEAVY!r} if m in sys.modules]]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    code, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    return f"{code}:{done.stderr}", set(heavy)


def test_importing_the_cli_imports_no_heavy_library() -> None:
    """`router --help` pays for argparse, not for scikit-learn, SciPy or the web stack."""
    script = ("import sys\nimport router.cli\n"
              f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == ""


@pytest.mark.parametrize("command", ["validate", "serve"])
def test_a_config_error_is_reported_before_any_model_library_loads(
        command: str, tmp_path: Path, champion_dir: Path) -> None:
    """A bad key, or a model directory that is not there: one error, scikit-learn not imported."""
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text(f"experiment: e\nmode: single\nbogus: 1\n"
                       f"champion: {{name: a, path: {champion_dir}}}\n")
    missing = tmp_path / "missing.yaml"
    missing.write_text("experiment: e\nmode: single\nchampion: {name: a, path: nowhere/1}\n")
    for path, expected in ((bad_key, "bogus: unknown key"),
                           (missing, "champion.path: ")):
        argv = ["validate", str(path)] if command == "validate" else [
            "serve", "--config", str(path), "--port", "1"]
        outcome, heavy = imported_after(*argv)
        assert outcome.startswith("1:") and expected in outcome, outcome
        assert "Traceback" not in outcome and not heavy & {"sklearn", "scipy", "uvicorn"}


def test_serve_on_a_port_in_use_is_one_line_before_any_model_loads(
        tmp_path: Path, champion_dir: Path) -> None:
    """Another process listens on the port: one line naming the address, exit 1, before
    scikit-learn or uvicorn is imported (not uvicorn's startup log and exit 3)."""
    path = write_config(tmp_path, champion=champion_dir, mode="single")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        outcome, heavy = imported_after("serve", "--config", str(path), "--port", str(port))
    assert outcome == (f"1:router: error: cannot listen on 127.0.0.1:{port}: "
                       "address already in use\n")
    assert not heavy & {"sklearn", "scipy", "uvicorn"}, heavy


def test_serve_with_a_store_it_cannot_open_is_one_line(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, champion_dir: Path) -> None:
    """A PostgreSQL store nobody answers at: one line naming it, exit 1, before uvicorn starts
    (not the lifespan's traceback and "Application startup failed")."""
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    path = write_config(tmp_path, champion=champion_dir, mode="single",
                        store=f"postgresql://postgres@127.0.0.1:{port}/nowhere")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        serve_port = free.getsockname()[1]
    code, out, err = run(capsys, "serve", "--config", str(path), "--port", str(serve_port))
    assert code == 1 and out == ""
    assert err.startswith(f"router: error: store 'postgresql://postgres@127.0.0.1:{port}/"
                          "nowhere': cannot open: ") and err.count("\n") == 1, err


def test_history_text_shows_each_switchs_figures_rounded_and_its_reasons(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The figures line reads as the stats table does: the decision and why, numbers to four
    significant digits."""
    store = open_store(f"sqlite:///{tmp_path / 'h.db'}", tmp_path)
    store.append_history(HistoryEntry(
        ts=1_000.0, action="rollback", from_model="b", to_model="a", reason="by hand",
        actor="cli:me", experiment="e",
        details={"decision": "continue", "reasons": ["mode single: no challenger to compare"],
                 "difference": 0.05729382511396608, "p_value": 3.0951953682110255e-05,
                 "champion_requests": 1200, "metric": "accuracy"}))
    store.close()
    code, out, _ = run(capsys, "history", "--store", f"sqlite:///{tmp_path / 'h.db'}")
    assert code == 0
    assert out.splitlines()[2] == ("    decision=continue (mode single: no challenger to "
                                   "compare), difference=0.05729, p_value=3.095e-05, "
                                   "champion_requests=1200, metric=accuracy")


def test_history_json_is_what_get_history_answers(
        capsys: pytest.CaptureFixture[str], make_client: Any, tmp_path: Path,
        champion_dir: Path) -> None:
    """`router history --json` and GET /history print one and the same document."""
    client = make_client(champion=champion_dir, mode="single", store="sqlite:///outcomes.db")
    store = client.app.state.gateway.store
    for i, action in enumerate(("step", "rollback")):
        store.append_history(HistoryEntry(ts=1_000.0 + i, action=action, from_model="a",
                                          to_model="b", reason=f"because {i}", actor="test",
                                          details={"n": i}))
    code, out, _ = run(capsys, "history", "--store", f"sqlite:///{tmp_path / 'outcomes.db'}",
                       "--json")
    assert code == 0
    assert json.loads(out) == client.get("/history").json()
    assert [e["action"] for e in json.loads(out)["history"]] == ["step", "rollback"]


def test_a_reader_that_closes_the_pipe_is_not_an_error(champion_dir: Path) -> None:
    """`router models list | head`: output into a pipe nobody reads any more ends with exit 0
    and nothing on stderr."""
    script = "import sys\nfrom router.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    process = subprocess.Popen([sys.executable, "-c", script, "models", "list",
                                str(champion_dir.parent.parent)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.close()  # long before the command has imported anything and printed
    _, err = process.communicate(timeout=120)
    assert (process.returncode, err.decode()) == (0, "")
