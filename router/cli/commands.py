"""The commands besides serving: sign, the demo and its traffic, models, switches and
history, statistics, training-serving skew."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.cli.common import DEFAULT_CONFIG, CommandError, open_config_store

if TYPE_CHECKING:  # the CLI imports heavy modules only in the command that needs them
    from router.config import RouterConfig
    from router.live.rollout_plan import RolloutView
    from router.outcomes import OutcomeStore

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
    from router.demo.training import existing_demo_files, train_demo, training_summary

    existing = existing_demo_files(args.dir)
    if existing and not args.force:
        raise CommandError(f"{existing[0]} already exists; use --force to replace it")
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


def current_view(config_path: Path, store: OutcomeStore) -> RolloutView:
    """The decision on the file's experiment as it stands, read from ``store`` with the
    file's models (what a gateway's rollout reads before it moves)."""
    from router.config import load_config
    from router.live.rollout_plan import view_of_report
    from router.serving.registry import ModelRegistry
    from router.serving.snapshot import load_models
    from router.stats.loader import assemble_report

    config = load_config(config_path, base_dir=Path.cwd())
    return view_of_report(assemble_report(store, config, load_models(config, ModelRegistry())))


def cmd_switch(args: argparse.Namespace) -> int:
    import getpass

    from router.config import load_config
    from router.live.rollout_plan import figures_now
    from router.live.switch import switch
    from router.serving.registry import ModelRegistry
    from router.serving.snapshot import load_models

    check_challenger_flag(Path(args.config), args.challenger)
    path, store = open_config_store(args.config)
    try:
        details = figures_now(lambda: current_view(path, store), args.challenger)
        # The new file's models must load, as a gateway will load them, before it is written.
        entry = switch(args.command, path, Path.cwd(), store,
                       reason=args.reason or f"{args.command} from the command line",
                       actor=f"cli:{getpass.getuser()}", challenger=args.challenger,
                       details=details, check=lambda config: load_models(config, ModelRegistry()))
    finally:
        store.close()
    after = load_config(path, base_dir=Path.cwd())
    print(f"{switch_outcome(entry.action, entry.from_model, entry.to_model, after)}; {path} "
          "rewritten, a running gateway applies it within 2 s")
    return 0


def check_challenger_flag(config_path: Path, challenger: str | None) -> None:
    """``--challenger`` names one of the file's challengers, by model or role (as
    ``POST /admin/...`` checks its body's), or the flag is the mistake, before anything is
    opened."""
    from router.config import load_config
    from router.config.challengers import arm_named, describe_challengers

    if challenger is None:
        return
    arms = load_config(config_path, base_dir=Path.cwd()).arms
    if arm_named(arms, challenger) is None:
        raise CommandError(f"--challenger {challenger!r} names no challenger in {config_path}; "
                           f"it serves {describe_challengers(arms)}")


def switch_outcome(action: str, from_model: str, to_model: str, after: RouterConfig) -> str:
    """What a switch changed, as ``after``, the rewritten file, serves: a rollback of one
    challenger among several that still serve stopped that one alone."""
    if action == "promote":
        return f"promoted: {to_model} now serves (was {from_model})"
    if after.mode == "single":
        return f"rolled back: {to_model} now serves (was {from_model})"
    if after.mode == "shadow":
        return (f"rolled back {from_model}: no longer mirrored; {to_model} serves, "
                f"{_and([arm.name for arm in after.arms])} still in shadow")
    serving = [to_model, *(arm.name for arm in after.arms if arm.percent > 0)]
    return f"rolled back {from_model}: its share is now 0; {_and(serving)} serve"


def _and(names: list[str]) -> str:
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def cmd_history(args: argparse.Namespace) -> int:
    import json
    import time

    from router.live.switch import history_document
    from router.outcomes import open_store

    experiment = None  # a store alone: every experiment's switches
    if args.store:
        store = open_store(args.store, Path.cwd(), create=False)
    else:
        from router.config import load_config

        config = load_config(Path(args.config), base_dir=Path.cwd())
        experiment = config.experiment
        store = open_store(config.store, Path.cwd(), create=False)
    try:
        entries = store.history(args.limit, experiment)
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
        # A whole store's switches (--store) may be several experiments': each says whose.
        whose = f"  [{e.experiment}]" if experiment is None and e.experiment else ""
        print(f"{when}  {e.action:<8}  {e.from_model} -> {e.to_model}  ({e.actor}){whose}")
        print(f"    {e.reason}")
        figures = switch_figures(e.details)
        if figures:
            print(f"    {figures}")
    return 0


def switch_figures(details: dict[str, Any]) -> str:
    """A switch's figures on one line, as the stats table shows numbers: the decision with its
    reasons, then each number to four significant digits."""
    shown = []
    for key, value in details.items():
        if key == "decision" and details.get("reasons"):
            shown.append(f"decision={value} ({'; '.join(map(str, details['reasons']))})")
        elif isinstance(value, float):
            shown.append(f"{key}={value:.4g}")
        elif isinstance(value, int | str):
            shown.append(f"{key}={value}")
    return ", ".join(shown)


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
        args.command_parser.error("give one of --url, --store/--config or --outcomes")
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


