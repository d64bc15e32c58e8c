"""The ``router`` command line: every subcommand, its options and its handler."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import NoReturn

from router.cli.commands import (
    cmd_demo,
    cmd_history,
    cmd_models_list,
    cmd_sign,
    cmd_simulate,
    cmd_skew,
    cmd_stats,
    cmd_switch,
    cmd_train_demo,
)
from router.cli.common import DEFAULT_CONFIG, trust_arguments
from router.cli.serve import cmd_serve, cmd_validate
from router.cli.values import (
    any_port,
    drift_spec,
    non_negative_float,
    non_negative_int,
    percent,
    port,
    positive_int,
    share,
    significance,
)

# -- the parser -------------------------------------------------------------------------------


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage mistakes read as every other error of the command: one line,
    naming the help to read, and exit 2 (argparse prints its usage block, then the line)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"router: error: {message} (see {self.prog} --help)\n")


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, parsed. An argument no parser took is blamed on the command given,
    whose help says what it takes: argparse blames it on the top-level parser."""
    args, extra = build_parser().parse_known_args(argv)
    if extra:
        args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="router",
        description="Route live traffic between a champion and a challenger scikit-learn "
                    "model, log every outcome, and decide when to switch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str,
                parent: argparse._SubParsersAction[OneLineParser] = sub) -> OneLineParser:
        p = parent.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler, command_parser=p)
        return p

    p = command("serve", cmd_serve, "Serve the gateway for a YAML config.")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML file (default {DEFAULT_CONFIG})")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=any_port, default=8000,
                   help="port (default 8000; 0: a free one, named in the log)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="worker processes sharing the port and the store (default 1)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--access-log", action="store_true",
                   help="log every request (off by default: it costs ~40%% of a fast request)")
    trust_arguments(p)

    p = command("validate", cmd_validate,
                "Check a YAML config and load its models; exit 1 listing each problem.")
    p.add_argument("file", help="YAML file")
    trust_arguments(p)

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
    p.add_argument("--port", type=port, default=8000, help="port (default 8000)")
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
    p.add_argument("--challenger-percent", type=percent, default=50.0,
                   help="with --outcomes: the configured share, for the SRM check (default 50)")
    p.add_argument("--alpha", type=significance,
                   help="significance level instead of the config's")
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

    models = command("models", lambda a: a.command_parser.error("choose a subcommand: list"),
                     "Inspect model directories.")
    models_sub = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    p = command("list", cmd_models_list,
                "List model directories under DIR (DIR/<name>/<version>/).", models_sub)
    p.add_argument("dir", nargs="?", default="models", help="models root (default models)")
    return parser


