"""The ``identitylock`` command line.

The command line is a layer on top of the library: each module of this package (one per command group)
depends on the library, never the other way round. A module listed in COMMAND_MODULES exposes
``register(subparsers)``, which adds parsers whose ``func(args) -> int`` returns the exit code. Modules listed
here must be cheap to import (heavy imports go inside the command functions).

Exit codes: 0 success, 1 unexpected error, 2 bad input (some files could not be used; the others are still
processed and reported).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_OK, IdentityLockError  # noqa: F401 (commands import them)

COMMAND_MODULES = [
    "face",
    "seeds",
    "client",
    "metrics",
    "curation",
    "training",
    "portrait",
    "calibration",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="identitylock",
        description="Identity-preserving portrait tools: prepare, embed, measure drift, train, render.",
    )
    parser.add_argument("--version", action="version", version=f"identitylock {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f".{name}", __package__)
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        return int(args.func(args) or 0)
    except IdentityLockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", EXIT_BAD_INPUT))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a user never sees a traceback; -v logs it for a bug report
        logging.getLogger("IdentityLock").debug("unexpected error", exc_info=True)
        print(f"error: unexpected {type(exc).__name__}: {exc} (run with -v for details)", file=sys.stderr)
        return EXIT_ERROR
