"""The ``bpcore`` command: ``bpcore train``, ``bpcore bench``, ``bpcore info``, ``bpcore export``.

Each subcommand lives in ``bpcore/commands/<name>.py`` and provides ``HELP``
(one line), ``add_arguments(parser)`` and ``run(args) -> int``; heavy imports
happen inside ``run``. Errors a user can fix are printed as one line
(``bpcore: error: ...``) with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from .errors import BpcoreError

__all__ = ["COMMANDS", "main"]

#: Subcommands, in the order ``bpcore --help`` lists them; the first is the default.
COMMANDS = ("train", "info", "bench", "export")


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line (the full usage only with ``--help``)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"bpcore: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="bpcore",
        description="Backpropagation on NumPy, CuPy, PyTorch, JAX or array-api-strict. "
        "With no command, runs `bpcore train` (an MLP on the bundled digits data).",
    )
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"bpcore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"bpcore.commands.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bpcore`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = [COMMANDS[0], *argv]
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("bpcore: interrupted", file=sys.stderr)
        return 130
    except (BpcoreError, ValueError, TypeError, OSError) as exc:
        print(f"bpcore: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # an optional dependency this run needs
        print(f"bpcore: error: {exc}; install what the README lists for this feature",
              file=sys.stderr)
        return 2
    except MemoryError:
        print("bpcore: error: out of memory: the network or the data set is too large for "
              "this machine; use smaller layers or batches", file=sys.stderr)
        return 2
