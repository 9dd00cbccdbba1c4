"""The `metatune` command: standalone tools beside the workflow (the workflow itself runs with `snakemake`).

Each subcommand lives in the module of its concern, which exposes `add_parser(subparsers)`; the parser it adds
carries its handler as the `func` default. Modules are imported lazily so `metatune --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module that defines add_parser(); keep alphabetical.
SUBCOMMANDS = {
    "check-config": "metatune.config_cli",
    "mbpp-score": "metatune.mbpp.cli",
    "recommend": "metatune.recommend",
    "verdicts": "metatune.verdict_cli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metatune", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        if only is None or only == name:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=f"(see metatune {name} --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    args = build_parser(only=command).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
