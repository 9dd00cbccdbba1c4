"""`metatune mbpp-score`: run MBPP completions in the sandbox and write the results JSON."""

from __future__ import annotations

import argparse
import sys

from metatune.io import DataError
from metatune.mbpp.sandbox import SandboxError, SandboxSettings
from metatune.mbpp.score import score_files


def run(args: argparse.Namespace) -> int:
    settings = SandboxSettings(timeout_s=args.timeout, memory_mb=args.memory_mb, allow_weak=args.allow_weak_sandbox)
    try:
        results = score_files(args.problems, args.samples, args.out, settings, args.workers, args.k)
    except (DataError, SandboxError) as e:
        print(f"mbpp-score: {e}", file=sys.stderr)
        return 2
    ks = " ".join(f"{key}={results[key]:.4f}" for key in results if key.startswith("pass@"))
    print(
        f"{args.out}: {ks} syntax_rate={results['syntax_rate']:.4f} over {results['n_tasks']} tasks "
        f"({results['isolation']}, {results['timings']['wall_s']:.1f} s)"
    )
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("mbpp-score", help="execute MBPP completions in the sandbox and score them")
    p.add_argument("--problems", required=True, help="mbpp.jsonl, sanitized-mbpp.json, or hub:full / hub:sanitized")
    p.add_argument("--samples", required=True, help='JSONL of {"task_id", "completion"[, "sample"]}')
    p.add_argument("--out", required=True, help="results JSON to write")
    p.add_argument("--workers", type=int, default=2, help="sandboxed workers running in parallel")
    p.add_argument("--timeout", type=float, default=3.0, help="wall seconds per completion (all its tests)")
    p.add_argument("--memory-mb", type=int, default=1024, help="address-space limit per completion")
    p.add_argument("--k", type=int, nargs="+", default=[1], help="pass@k values to report")
    p.add_argument(
        "--allow-weak-sandbox",
        action="store_true",
        help="run without bubblewrap if it is missing (no namespaces; stated in the results' isolation)",
    )
    p.set_defaults(func=run)
