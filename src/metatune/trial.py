"""Run one trial: resolve its hyperparameters, call the trainer, write metrics.json and curve.csv.

Invoked by the trial rules as `python -m metatune.trial SPEC_JSON [--hp-file F --hp-index K]`: a light process
(no torch for the simulated and external trainers), so thousands of trials stay cheap. Whatever the trainer does,
short of killing this process, the trial ends with a metrics.json whose status says how it went.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
import traceback
from dataclasses import asdict
from importlib import import_module
from pathlib import Path

from metatune import __version__
from metatune.contract import TrialOutcome, TrialSpec, validate_metrics
from metatune.io import atomic_write_json, atomic_write_text, read_json

TRAINERS = {
    "simulated": "metatune.trainers.simulated",
    "external": "metatune.trainers.external",
    "nanogpt_lora": "metatune.trainers.nanogpt_lora",
    "hf_sft": "metatune.trainers.hf_sft",
}


def resolve_hp(spec_fields: dict, hp_file: str | None, hp_index: int | None) -> dict:
    """Stage-1 specs carry their hyperparameters; stage-2 and rerun trials read theirs from the proposals or
    selection file, which does not exist yet when Snakemake builds the DAG."""
    if hp_file is None:
        return spec_fields["hp"]
    configs = read_json(hp_file)["configs"]
    if hp_index is None or not 0 <= hp_index < len(configs):
        raise ValueError(f"{hp_file}: no configuration at index {hp_index} (it has {len(configs)})")
    return configs[hp_index]["hp"]


def curve_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["step", "tokens", "train_loss", "val_loss"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k) for k in writer.fieldnames})
    return buf.getvalue()


def metrics_record(spec: TrialSpec, outcome: TrialOutcome) -> dict:
    def finite(x):
        return x if x is None or math.isfinite(x) else None

    return {
        "run_id": spec.run_id, "stage": spec.stage, "dataset": spec.dataset, "seed": spec.seed, "hp": spec.hp,
        "token_budget": spec.token_budget, "seq_len": spec.seq_len, "trainer": spec.trainer,
        "status": outcome.status, "val_loss": finite(outcome.val_loss), "best_val_loss": finite(outcome.best_val_loss),
        "train_loss": finite(outcome.train_loss), "tokens_seen": outcome.tokens_seen, "wall_s": outcome.wall_s,
        "gpu_hours": outcome.gpu_hours, "peak_mem_mb": outcome.peak_mem_mb,
        "tokens_per_s": finite(outcome.tokens_per_s), "device": outcome.device,
        "error": outcome.error, "versions": {"metatune": __version__, **outcome.versions},
    }


def run(spec: TrialSpec) -> dict:
    """Train and record; any exception from the trainer becomes a `failed` trial with its reason."""
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "spec.json", asdict(spec))
    start = time.monotonic()
    try:
        outcome = import_module(TRAINERS[spec.trainer]).train(spec)
    except Exception as e:  # a broken trial is data: record why and let the sweep go on
        traceback.print_exc()
        outcome = TrialOutcome(status="failed", wall_s=time.monotonic() - start,
                               error=f"{type(e).__name__}: {e}"[:2000])
    metrics = validate_metrics(metrics_record(spec, outcome))
    atomic_write_text(out / "curve.csv", curve_csv(outcome.curve))
    atomic_write_json(out / "metrics.json", metrics)  # last: its existence means the trial is done
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one metatune trial.")
    parser.add_argument("spec", help="the trial spec as JSON (TrialSpec fields; hp may be omitted with --hp-file)")
    parser.add_argument("--hp-file", help="proposals.json or selection.json to read the hyperparameters from")
    parser.add_argument("--hp-index", type=int, help="index into that file's configs")
    args = parser.parse_args(argv)
    fields = json.loads(args.spec)
    fields["hp"] = resolve_hp(fields, args.hp_file, args.hp_index)
    metrics = run(TrialSpec(**fields))
    print(f"{metrics['run_id']}: {metrics['status']} val_loss={metrics['val_loss']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
