"""The `metatune` command: standalone tools beside the workflow (the workflow itself runs with `snakemake`).

Each subcommand lives in the module of its concern, which exposes `add_parser(subparsers)`; the parser it adds
carries its handler as the `func` default. Modules are imported lazily so `metatune --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys

# subcommand -> module that defines add_parser(); keep alphabetical.
SUBCOMMANDS = {
    "check-config": "metatune.config_cli",
    "mbpp-score": "metatune.mbpp.cli",
    "recommend": "metatune.recommend",
    "verdicts": "metatune.verdict_cli",
}


def version() -> str:
    """The installed package's version (pyproject.toml is its one source)."""
    try:
        return importlib.metadata.version("metatune")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metatune", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
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
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped early (`metatune ... | head`): it has what it wanted, so no traceback and no failure
        # for a pipeline under `set -o pipefail`. Point stdout at /dev/null so the flush at exit cannot raise.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


if __name__ == "__main__":
    sys.exit(main())
