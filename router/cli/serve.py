"""``router serve`` and ``router validate``: a configuration checked before any model loads."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.cli.common import CommandError, apply_trust
from router.errors import ConfigError, ConfigProblem

if TYPE_CHECKING:  # the CLI imports heavy modules only in the command that needs them
    from router.config import RouterConfig



# -- serve ------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from router.config import load_config
    from router.gateway.metrics_dir import forget_inherited, shared_by_workers

    forget_inherited()

    config_path = Path(args.config).resolve()
    base_dir = Path.cwd()
    trust = apply_trust(args)
    # A config fault is one line here, before a second goes to importing scikit-learn.
    config = load_config(config_path, base_dir=base_dir)
    check_model_directories(config)
    check_can_listen(args.host, args.port)

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
    check_store(config.store, base_dir)
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
        "timeout_graceful_shutdown": SHUTDOWN_GRACE_S,
        # No "server: uvicorn" on every answer: bytes and a header check per request, and
        # nothing a client needs to know.
        "server_header": False}
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


def check_model_directories(config: RouterConfig) -> None:
    """A model directory that is not there, named with its key and line before any import."""
    keys = {role: f"{config.key_of(role)}.path" for role in config.model_refs()}
    problems = [ConfigProblem(keys[role], config.lines.get(keys[role]),
                              f"{ref.path}: model directory does not exist")
                for role, ref in config.model_refs().items() if not ref.path.is_dir()]
    if problems:
        raise ConfigError(config.source, problems)


def check_store(url: str, base_dir: Path) -> None:
    """Open the store once and let go: one that cannot be opened (a PostgreSQL server that does
    not answer, a SQLite directory that cannot be written) is one line now rather than the
    app's startup traceback. It also makes the file or the schema, as the gateway would."""
    from router.outcomes import open_store

    open_store(url, base_dir).close()


def check_can_listen(host: str, port: int) -> None:
    """A port another process holds, as one line now rather than uvicorn's startup log and
    exit 3 once the models have loaded."""
    from router.listening import cannot_listen

    problem = cannot_listen(host, port)
    if problem:
        raise CommandError(problem)


# -- validate ---------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from router.config import load_config

    trust = apply_trust(args)
    try:
        config = load_config(args.file, base_dir=Path.cwd())
        check_model_directories(config)
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


