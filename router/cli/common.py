"""What the commands share: the default file, one-line failures, model trust, the store of a
configuration."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports heavy modules only in the command that needs them
    from router.artifacts.trust import ModelTrust
    from router.outcomes import OutcomeStore


DEFAULT_CONFIG = "configs/router.yaml"


class CommandError(Exception):
    """A failure to report on one line and exit 1."""


def fail(message: str, code: int = 1) -> int:
    print(f"router: error: {message}", file=sys.stderr)
    return code



def apply_trust(args: argparse.Namespace) -> ModelTrust:
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


def trust_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--public-key", metavar="FILE",
                   help="load only model directories signed (router sign) by this Ed25519 "
                        "public key's private half (PEM); default $ROUTER_MODEL_PUBLIC_KEY")
    p.add_argument("--trust-type", action="append", metavar="NAME",
                   help="a type skops may build beyond its defaults (repeatable); default "
                        "$ROUTER_SKOPS_TRUSTED_TYPES, comma-separated")



def open_config_store(config_file: str, *, create: bool = True) -> tuple[Path, OutcomeStore]:
    """The config's path and its store; ``create=False`` for a command that only reads it."""
    from router.config import load_config
    from router.outcomes import open_store

    path = Path(config_file)
    config = load_config(path, base_dir=Path.cwd())
    return path, open_store(config.store, Path.cwd(), create=create)


