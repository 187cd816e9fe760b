"""The ``graphattn`` command.

Every subcommand lives in its own module, which exposes ``add_subcommand(subparsers)``: it adds
its parser and sets ``run`` (a function taking the parsed ``argparse.Namespace`` and returning an
exit status) with ``parser.set_defaults(run=...)``. :data:`SUBCOMMANDS` lists those functions
explicitly, so adding a command is one import and one entry here; nothing registers itself
by being imported.

Example:
    $ graphattn --version
    $ graphattn demo --quick
    $ graphattn molecules train --csv data.csv --smiles-col smiles --target-col logS --out run
    $ graphattn molecules predict --model run --csv new.csv --out predictions.csv
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from graphattn import __version__
from graphattn import demo
from graphattn.patterns_cli import add_subcommand as add_patterns_subcommand
from graphattn.property import add_subcommand as add_molecules_subcommand

__all__ = ["build_parser", "main", "SUBCOMMANDS"]

AddSubcommand = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

# One entry per subcommand, in the order `graphattn --help` lists them.
SUBCOMMANDS: tuple[AddSubcommand, ...] = (demo.add_subcommand, add_molecules_subcommand, add_patterns_subcommand)


def _version_text() -> str:
    import torch

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build"
    return f"graphattn {__version__} (torch {torch.__version__}, {build})"


def build_parser() -> argparse.ArgumentParser:
    """The ``graphattn`` argument parser with every subcommand of :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="graphattn",
        description="Attention as sparse message passing over sets of vectors.",
    )
    parser.add_argument("--version", action="version", version=_version_text())
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    subparsers.required = True
    for add_subcommand in SUBCOMMANDS:
        add_subcommand(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Bad arguments exit through ``SystemExit(2)`` with argparse's usage message.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
