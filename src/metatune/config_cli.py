"""`metatune check-config FILE`: validate a config file as the workflow would, and print it with defaults."""

from __future__ import annotations

import argparse
import sys

import yaml

from metatune import config


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config.load(args.config)
    except config.ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.print:
        print(yaml.safe_dump(cfg, sort_keys=False))
    else:
        print(f"{args.config}: ok ({len(cfg['datasets'])} datasets)")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("check-config", help="validate a workflow config file")
    p.add_argument("config", help="a YAML config file")
    p.add_argument("--print", action="store_true", help="print the config with every default filled in")
    p.set_defaults(func=run)
