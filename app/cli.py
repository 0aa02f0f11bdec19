"""`saekit`: one subcommand per stage; each lives in `app/commands/<name>.py`.

A command module defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`.
Commands are thin: parse, build a config from `sae.config`, call the library, print.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Order is the order `saekit --help` lists them in: the pipeline's order.
COMMANDS = ["setup", "hooks", "cache", "train", "eval", "push", "analyze", "autointerp", "neuronpedia", "explore", "steer", "steer_sweep", "steer_bench", "demo"]


def _load_commands() -> list:
    modules = []
    for name in COMMANDS:
        try:
            modules.append(importlib.import_module(f"app.commands.{name}"))
        except ModuleNotFoundError as e:
            if e.name != f"app.commands.{name}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saekit",
        description="Sparse-autoencoder toolkit: cache activations, train SAEs, steer, explore.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _load_commands():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; everything written so far is kept and a re-run resumes", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as e:
        # Library errors are written to be read by people: show the message, not a traceback.
        if args.verbose:
            raise
        print(f"saekit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
