"""The ``latent-reach`` command line: finds the sub-commands in ``game.commands`` and runs one.

With no arguments it starts the game on the default scene (the ``run`` command). Bad input (a
``UserError``, or an ``OSError`` about a named path) becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from game import __version__
from game.core.errors import UserError

DEFAULT_COMMAND = "run"


def _command_modules() -> list[ModuleType]:
    import game.commands as package

    modules = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"game.commands.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            modules.append(module)
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latent-reach",
        description=(
            "Stand inside a neural network's feature space and reshape it by hand. "
            "With no command, starts the game on the default scene."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"latent-reach {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(
            module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP)
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help", "--version")):
        args_list = [DEFAULT_COMMAND, *args_list]
    args = parser.parse_args(args_list)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"latent-reach: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # A path the person gave that cannot be read or written (a folder where a file should be,
        # a read-only disk): bad input, not a bug. OS errors without a path still show a traceback.
        if exc.filename is None:
            raise
        print(f"latent-reach: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latent-reach: interrupted", file=sys.stderr)
        return 130
