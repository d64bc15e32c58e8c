"""The ``router`` command: each subcommand calls library code and picks an exit code.

Errors are one line on stderr (``router: error: …``) and a non-zero exit: 1 for a failure of
the task, 2 for a usage mistake (argparse's own convention).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.cli_values import (
    drift_spec,
    non_negative_float,
    non_negative_int,
    positive_int,
    share,
    significance,
)
from router.errors import ConfigError, ConfigProblem, RouterError

if TYPE_CHECKING:  # the CLI imports heavy modules only in the command that needs them
    from router.artifacts.trust import ModelTrust
    from router.config import RouterConfig
    from router.outcomes import OutcomeStore

DEFAULT_CONFIG = "configs/router.yaml"


class CommandError(Exception):
    """A failure to report on one line and exit 1."""


def _fail(message: str, code: int = 1) -> int:
    print(f"router: error: {message}", file=sys.stderr)
    return code


# -- serve ------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from router.config import load_config
    from router.gateway.metrics_dir import forget_inherited, shared_by_workers

    forget_inherited()

    config_path = Path(args.config).resolve()
    base_dir = Path.cwd()
    trust = _apply_trust(args)
    # A config fault is one line here, before a second goes to importing scikit-learn.
    config = load_config(config_path, base_dir=base_dir)
    _check_model_directories(config)

    import uvicorn

    from router.gateway.app import BASE_DIR_ENV, CONFIG_ENV, create_app
    from router.gateway.connections import LIMITS_ENV, SHUTDOWN_GRACE_S, ConnectionLimits
    from router.serving.registry import ENGINES_IN_BACKGROUND, ENGINES_UNCHOSEN, ModelRegistry
    from router.serving.snapshot import load_models

    # Fail here, with one line, rather than inside a worker process with a traceback; one
    # worker serves from this very process and reuses these models (several workers load
    # their own, so this process has no engine to choose).
    registry = ModelRegistry(trust, engines=ENGINES_IN_BACKGROUND if args.workers == 1
                             else ENGINES_UNCHOSEN)
    load_models(config, registry)
    os.environ[CONFIG_ENV] = str(config_path)
    os.environ[BASE_DIR_ENV] = str(base_dir)
    # Socket-level limits, fixed for the process's life (a reload changes only the app's).
    os.environ[LIMITS_ENV] = ConnectionLimits(config.limits.header_timeout_s,
                                              config.limits.max_connections).to_env()
    options: dict[str, Any] = {
        "host": args.host, "port": args.port, "loop": "auto",
        "http": "router.gateway.connections:LimitedHttpToolsProtocol",
        "access_log": args.access_log, "log_level": args.log_level,
        "log_config": _log_config(args.log_level),
        "timeout_graceful_shutdown": SHUTDOWN_GRACE_S}
    with shared_by_workers(args.workers):
        if args.workers == 1:
            uvicorn.run(create_app(config_path, base_dir=base_dir, tune_gc=True,
                                   registry=registry), **options)
        else:
            uvicorn.run("router.gateway.app:app_from_env", factory=True,
                        workers=args.workers, **options)
    return 0


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, with the router's own loggers (reloads, switches, the rollout) on
    its console handler at the same level; each worker process applies it."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["router"] = {"handlers": ["default"], "level": level.upper(),
                                   "propagate": False}
    return config


def _check_model_directories(config: RouterConfig) -> None:
    """A model directory that is not there, named with its key and line before any import."""
    keys = {role: f"{config.key_of(role)}.path" for role in config.model_refs()}
    problems = [ConfigProblem(keys[role], config.lines.get(keys[role]),
                              f"{ref.path}: model directory does not exist")
                for role, ref in config.model_refs().items() if not ref.path.is_dir()]
    if problems:
        raise ConfigError(config.source, problems)


# -- validate ---------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from router.config import load_config

    trust = _apply_trust(args)
    try:
        config = load_config(args.file, base_dir=Path.cwd())
        _check_model_directories(config)
        # Only a valid file is worth the second or more that importing scikit-learn takes.
        from router.serving.registry import ENGINES_UNCHOSEN, ModelRegistry
        from router.serving.snapshot import load_models

        models = load_models(config, ModelRegistry(trust, engines=ENGINES_UNCHOSEN))
    except ConfigError as exc:
        for problem in exc.problems:
            where = f"{exc.source}:{problem.line}" if problem.line else exc.source
            key = f"{problem.path}: " if problem.path else ""
            print(f"{where}: {key}{problem.message}", file=sys.stderr)
        return 1
    names = {role: ref.name for role, ref in config.model_refs().items()}
    roles = {role: role if role in ("champion", "challenger", "previous") else "challenger"
             for role in models}
    served = ", ".join(f"{roles[role]} {names[role]}:{m.version}" for role, m in models.items())
    print(f"{args.file}: ok (experiment {config.experiment}, mode {config.mode}; {served})")
    return 0


def _apply_trust(args: argparse.Namespace) -> ModelTrust:
    """The trust ``--public-key`` and ``--trust-type`` give (else the environment's), checked
    now and passed on to every process this one starts through the environment."""
    from router.artifacts.trust import ModelTrust

    inherited = ModelTrust.from_env()
    trust = ModelTrust(
        Path(args.public_key).resolve() if args.public_key else inherited.public_key_file,
        tuple(args.trust_type or ()) or inherited.trusted_types)
    _ = trust.public_key  # a missing or wrong key file: one line now, not in each worker
    if trust != inherited:
        os.environ.update(trust.to_env())
    return trust


def _trust_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--public-key", metavar="FILE",
                   help="load only model directories signed (router sign) by this Ed25519 "
                        "public key's private half (PEM); default $ROUTER_MODEL_PUBLIC_KEY")
    p.add_argument("--trust-type", action="append", metavar="NAME",
                   help="a type skops may build beyond its defaults (repeatable); default "
                        "$ROUTER_SKOPS_TRUSTED_TYPES, comma-separated")


# -- sign -------------------------------------------------------------------------------------


def cmd_sign(args: argparse.Namespace) -> int:
    import json

    from router.artifacts import sign_directory

    path = sign_directory(Path(args.dir), Path(args.key))
    fingerprint = json.loads(path.read_text())["public_key_sha256"]
    print(f"signed {args.dir} with key {fingerprint[:16]}: wrote {path}")
    return 0


# -- train-demo -------------------------------------------------------------------------------


def cmd_train_demo(args: argparse.Namespace) -> int:
    from router.demo.training import train_demo, training_summary

    result = train_demo(Path(args.dir), force=args.force)
    for line in training_summary(result):
        print(line)
    return 0


# -- demo, simulate ---------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from router.demo.live import DemoError, DemoOptions, run_demo
    from router.demo.simulate import SimulationError

    options = DemoOptions(root=Path(args.dir), host=args.host, port=args.port,
                          max_requests=args.max_requests, round_size=args.round,
                          concurrency=args.concurrency, fresh=args.fresh, seed=args.seed)
    try:
        return run_demo(options)
    except (DemoError, SimulationError) as exc:
        raise CommandError(str(exc)) from None


def cmd_simulate(args: argparse.Namespace) -> int:
    from router.demo.client import SimulationError
    from router.demo.progress import ProgressBar
    from router.demo.simulate import Simulator, holdout_rows

    try:
        X, y, names = holdout_rows(args.holdout)
        simulator = Simulator(args.url, X, y, names, users=args.users,
                              concurrency=args.concurrency, feedback_delay=args.feedback_delay,
                              seed=args.seed, drift=dict(args.drift or ()))
        bar = ProgressBar(args.requests)
        try:
            simulator.run(args.requests, bar.update)
        finally:
            # Stopped or done: the labels of every answered request still arrive.
            simulator.flush_feedback()
            bar.close(simulator.result)
    except SimulationError as exc:
        raise CommandError(str(exc)) from None
    print(simulator.result.summary())
    if simulator.result.answered == 0:
        raise CommandError(f"no request was answered by {args.url}")
    return 0


# -- models list ------------------------------------------------------------------------------


def cmd_models_list(args: argparse.Namespace) -> int:
    from router.artifacts import list_models

    rows = list_models(Path(args.dir))
    if not rows:
        raise CommandError(f"no model directories under {args.dir}")
    header = ("NAME", "VERSION", "TASK", "MODEL", "CREATED", "SHA256", "STATUS")
    table = [header, *[(r["name"], r["version"], r["task"], r["model_type"], r["created_at"],
                        r["sha256"][:12], r["status"]) for r in rows]]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


# -- promote, rollback, history ----------------------------------------------------------------


def _open_config_store(config_file: str) -> tuple[Path, OutcomeStore]:
    from router.config import load_config
    from router.outcomes import open_store

    path = Path(config_file)
    config = load_config(path, base_dir=Path.cwd())
    return path, open_store(config.store, Path.cwd())


def cmd_switch(args: argparse.Namespace) -> int:
    import getpass

    from router.live.switch import switch
    from router.serving.registry import ModelRegistry
    from router.serving.snapshot import load_models

    path, store = _open_config_store(args.config)
    try:
        # The new file's models must load, as a gateway will load them, before it is written.
        entry = switch(args.command, path, Path.cwd(), store,
                       reason=args.reason or f"{args.command} from the command line",
                       actor=f"cli:{getpass.getuser()}", challenger=args.challenger,
                       check=lambda config: load_models(config, ModelRegistry()))
    finally:
        store.close()
    verb = "promoted" if entry.action == "promote" else "rolled back"
    print(f"{verb}: {entry.to_model} now serves (was {entry.from_model}); {path} rewritten, "
          "a running gateway applies it within 2 s")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    import json
    import time

    from router.live.switch import history_document
    from router.outcomes import open_store

    if args.store:
        store = open_store(args.store, Path.cwd())
    else:
        _, store = _open_config_store(args.config)
    try:
        entries = store.history(args.limit)
    finally:
        store.close()
    if args.json:
        print(json.dumps(history_document(entries), indent=2))
        return 0
    if not entries:
        print("no switches recorded yet")
        return 0
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.ts))
        print(f"{when}  {e.action:<8}  {e.from_model} -> {e.to_model}  ({e.actor})")
        print(f"    {e.reason}")
        figures = ", ".join(f"{k}={v}" for k, v in e.details.items()
                            if isinstance(v, int | float | str))
        if figures:
            print(f"    {figures}")
    return 0


# -- stats ------------------------------------------------------------------------------------


def cmd_stats(args: argparse.Namespace) -> int:
    import json

    from router.stats.console import (
        FetchError,
        exported_report,
        fetch_report,
        offline_report,
        render_report,
    )

    if sum(bool(x) for x in (args.url, args.store or args.config, args.outcomes)) > 1:
        raise CommandError("give one of --url, --store/--config or --outcomes")
    try:
        if args.outcomes:
            report = exported_report(args.outcomes, alpha=args.alpha, metric=args.metric,
                                     mode=args.mode, challenger_percent=args.challenger_percent)
        elif args.store or args.config:
            report = offline_report(args.config or DEFAULT_CONFIG, args.store,
                                    alpha=args.alpha, metric=args.metric)
        else:
            report = fetch_report(args.url or "http://127.0.0.1:8000", alpha=args.alpha,
                                  metric=args.metric)
    except FetchError as exc:
        raise CommandError(str(exc)) from None
    print(json.dumps(report, indent=2) if args.json else render_report(report))
    return 0


# -- skew -------------------------------------------------------------------------------------


def cmd_skew(args: argparse.Namespace) -> int:
    import json

    from router.monitoring.skew import SkewRule, config_skew, render_skew

    rule = SkewRule(args.rtol, args.atol, args.max_mismatch_share, args.alpha)
    report = config_skew(args.config, Path(args.features), store_url=args.store, rule=rule)
    if not report["rows_joined"]:
        raise CommandError(f"none of the {report['rows_missing']} request ids of "
                           f"{args.features} is in the log")
    print(json.dumps(report, indent=2) if args.json else render_skew(report, rule))
    return 0


# -- the parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="router",
        description="Route live traffic between a champion and a challenger scikit-learn "
                    "model, log every outcome, and decide when to switch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str,
                parent: argparse._SubParsersAction[argparse.ArgumentParser] = sub
                ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    p = command("serve", cmd_serve, "Serve the gateway for a YAML config.")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML file (default {DEFAULT_CONFIG})")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="worker processes sharing the port and the store (default 1)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--access-log", action="store_true",
                   help="log every request (off by default: it costs ~40%% of a fast request)")
    _trust_arguments(p)

    p = command("validate", cmd_validate,
                "Check a YAML config and load its models; exit 1 listing each problem.")
    p.add_argument("file", help="YAML file")
    _trust_arguments(p)

    p = command("sign", cmd_sign,
                "Sign a model directory's digest with an Ed25519 private key: writes "
                "DIR/signature.json, which a gateway started with --public-key requires.")
    p.add_argument("dir", help="model directory (models/<name>/<version>)")
    p.add_argument("--key", required=True, metavar="KEY",
                   help="Ed25519 private key, PEM (openssl genpkey -algorithm ed25519)")

    p = command("train-demo", cmd_train_demo,
                "Train a demo champion and challenger and write models/ and configs/router.yaml.")
    p.add_argument("--dir", default=".", help="where to write models/ and configs/ (default .)")
    p.add_argument("--force", action="store_true", help="retrain even if the models exist")

    for action, text in (("promote", "Make the challenger the champion (mode single; the old "
                                     "champion kept as previous)."),
                         ("rollback", "Restore the previous champion, or stop the "
                                      "challenger's traffic.")):
        p = command(action, cmd_switch, text + " Rewrites the YAML keeping its comments and "
                    "records the switch in the store's history.")
        p.add_argument("--config", default=DEFAULT_CONFIG,
                       help=f"YAML file (default {DEFAULT_CONFIG})")
        p.add_argument("--reason", help="why, for the history")
        p.add_argument("--challenger", help="which challenger, when the file lists several "
                       "(challengers:); a rollback without it stops them all")

    p = command("demo", cmd_demo,
                "Train the demo models if missing, serve them on SQLite, send simulated "
                "traffic with late ground truth until /stats gives a verdict, print the "
                "results, and keep serving until Ctrl-C.")
    p.add_argument("--dir", default=".",
                   help="project directory: models/, configs/, var/ (default .)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-requests", type=positive_int, default=30_000,
                   help="stop the traffic here without a verdict (default 30000)")
    p.add_argument("--round", type=positive_int, default=500,
                   help="requests between two looks at /stats (default 500)")
    p.add_argument("--concurrency", type=positive_int, default=8,
                   help="simultaneous requests (default 8)")
    p.add_argument("--seed", type=int, help="seed of the simulated traffic")
    p.add_argument("--fresh", action="store_true",
                   help="retrain the models and start an empty outcome store (deletes the "
                        "demo's SQLite file)")

    p = command("simulate", cmd_simulate,
                "Send held-out demo rows to a gateway as users of its sticky key, and their "
                "true labels as feedback some requests later, with a progress bar.")
    p.add_argument("--url", default="http://127.0.0.1:8000",
                   help="gateway base URL (default http://127.0.0.1:8000)")
    p.add_argument("--requests", type=positive_int, default=1000,
                   help="predictions to send (default 1000)")
    p.add_argument("--holdout", default="models/demo-holdout.npz",
                   help="rows and true labels written by train-demo "
                        "(default models/demo-holdout.npz)")
    p.add_argument("--concurrency", type=positive_int, default=8,
                   help="simultaneous requests, one keep-alive connection each (default 8)")
    p.add_argument("--users", type=positive_int, default=100_000,
                   help="distinct user ids to draw from (default 100000)")
    p.add_argument("--feedback-delay", type=non_negative_int, default=200,
                   help="answered requests before a label is sent (default 200)")
    p.add_argument("--seed", type=int, help="seed of the rows and users drawn")
    p.add_argument("--drift", type=drift_spec, action="append", metavar="FEATURE=SHIFT",
                   help="add SHIFT standard deviations to FEATURE in every row sent, to show "
                        "input drift on purpose (repeatable)")

    p = command("history", cmd_history, "The switches (promote, rollback, rollout steps), "
                "oldest first, with the figures behind each.")
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"read the store URL from this YAML (default {DEFAULT_CONFIG})")
    p.add_argument("--store", help="store URL instead of --config (sqlite:///var/outcomes.db)")
    p.add_argument("--limit", type=positive_int, help="only the latest N")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = command("stats", cmd_stats, "The experiment's results and recommendation, from a "
                "running gateway or replayed offline from a store and a config.")
    p.add_argument("--url", help="a running gateway (default http://127.0.0.1:8000)")
    p.add_argument("--store", help="replay offline from this store URL (with --config)")
    p.add_argument("--config", help=f"YAML of the experiment, offline (default {DEFAULT_CONFIG};"
                   " its store: unless --store is given)")
    p.add_argument("--outcomes", metavar="FILE.csv",
                   help="analyse an exported log instead: one row per answered request in the "
                        "order its label arrived (variant, prediction, label; optional unit_id, "
                        "request_id, latency_ms, error, shadow)")
    p.add_argument("--mode", choices=["ab", "shadow"], default="ab",
                   help="with --outcomes: how the log was collected (default ab)")
    p.add_argument("--challenger-percent", type=float, default=50.0,
                   help="with --outcomes: the configured share, for the SRM check (default 50)")
    p.add_argument("--alpha", type=float, help="significance level instead of the config's")
    p.add_argument("--metric", choices=["accuracy", "log_loss", "mae", "rmse"],
                   help="analysis metric instead of the config's")
    p.add_argument("--json", action="store_true", help="the report as JSON")

    p = command("skew", cmd_skew, "Training-serving skew: compare the features the training "
                "pipeline recomputed for logged requests (a CSV of request_id and one column "
                "per feature) with the inputs the gateway logged, feature by feature.")
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"YAML naming the store and the champion (default {DEFAULT_CONFIG})")
    p.add_argument("--features", required=True, metavar="FILE.csv",
                   help="request_id and the champion's feature columns, recomputed offline")
    p.add_argument("--store", help="store URL instead of the config's")
    p.add_argument("--rtol", type=non_negative_float, default=1e-5,
                   help="relative tolerance: a value differs when |logged - offline| > "
                        "atol + rtol * |offline| (default 1e-5)")
    p.add_argument("--atol", type=non_negative_float, default=1e-8,
                   help="absolute tolerance (default 1e-8)")
    p.add_argument("--max-mismatch-share", type=share, default=0.01,
                   help="a feature with more rows differing than this is skewed (default 0.01)")
    p.add_argument("--alpha", type=significance, default=0.01,
                   help="level of the t-test on a feature's mean difference, over the "
                        "features (default 0.01)")
    p.add_argument("--json", action="store_true", help="the report as JSON")

    models = command("models", lambda a: _fail("choose a subcommand: list", 2),
                     "Inspect model directories.")
    models_sub = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    p = command("list", cmd_models_list,
                "List model directories under DIR (DIR/<name>/<version>/).", models_sub)
    p.add_argument("dir", nargs="?", default="models", help="models root (default models)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (RouterError, CommandError) as exc:
        message = exc.message if isinstance(exc, RouterError) else str(exc)
        return _fail(" ".join(message.split()))
    except BrokenPipeError:
        # `router models list | head` closing the pipe is not an error (caught before OSError,
        # its base); stdout goes nowhere then, so that the exit's flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except FileExistsError as exc:
        return _fail(f"{exc} (use --force to replace it)")
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
