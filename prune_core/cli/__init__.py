"""`prune-core <command>`: each command is a module of this package with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; commands are discovered, so adding a module adds a command."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from prune_core.progress import Cancelled


def _commands() -> dict:
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    return {name.replace("_", "-"): importlib.import_module(f"{__name__}.{name}") for name in names}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prune-core",
        description="Layer Pruning Explorer: measure which blocks of layers an LLM can lose (angular distance, "
                    "Gromov et al. 2024), remove them, heal with LoRA/QLoRA, and evaluate.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _commands().items():
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, ConnectionError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Cancelled:
        print("stopped", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
