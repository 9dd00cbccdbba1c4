"""`metatune check-config [STUDY ...] [--config KEY=VALUE ...]`: resolve and validate a config exactly as
`snakemake --configfile STUDY ... --config KEY=VALUE ...` does, and print it with every default."""

from __future__ import annotations

import argparse
import sys

from metatune import config


def parse_overrides(entries: list[str]) -> dict:
    """KEY=VALUE pairs as Snakemake's --config reads them (its own parser: the same values, the same types)."""
    if not entries:
        return {}
    from snakemake.cli import parse_config  # slow to import: only when there are overrides

    try:
        return parse_config(entries)
    except ValueError as e:
        raise config.ConfigError(f"--config: {e}") from None


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config.resolve(args.studies, parse_overrides(args.config))
    except config.ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.print:
        sys.stdout.write(config.dump(cfg))
    else:
        print(f"{' + '.join(args.studies) or config.DEMO_PATH}: ok ({len(cfg['datasets'])} datasets)")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("check-config", help="resolve and validate the workflow config as snakemake would")
    p.add_argument("studies", nargs="*", metavar="STUDY",
                   help="config files in the order given to --configfile (none: the demo, config/config.yaml)")
    p.add_argument("--config", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="overrides, as snakemake's --config (after the study files)")
    p.add_argument("--print", action="store_true", help="print the resolved config with every default filled in")
    p.set_defaults(func=run)
