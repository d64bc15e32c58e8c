"""The ``router`` command: each subcommand calls library code and picks an exit code.

Errors are one line on stderr (``router: error: …``) and a non-zero exit: 1 for a failure of
the task, 2 for a usage mistake (argparse's own convention).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from router.cli.common import CommandError, fail
from router.cli.parser import build_parser, parse_arguments
from router.errors import RouterError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        return int(args.handler(args))
    except (RouterError, CommandError) as exc:
        message = exc.message if isinstance(exc, RouterError) else str(exc)
        return fail(" ".join(message.split()))
    except BrokenPipeError:
        # `router models list | head` closing the pipe is not an error (caught before OSError,
        # its base); stdout goes nowhere then, so that the exit's flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        return fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    except KeyboardInterrupt:
        return 130


