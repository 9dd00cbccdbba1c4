"""Run one trial: resolve its hyperparameters, call the trainer, write metrics.json and curve.csv.

Invoked by the trial rules as `python -m metatune.trial --stage-settings JSON --dataset D ...`: a light process
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
from dataclasses import asdict, replace
from importlib import import_module
from pathlib import Path

from metatune import __version__, fidelity
from metatune.contract import PLACEMENT_KEYS, TrialOutcome, TrialSpec, trial_id, utc_now, validate_metrics
from metatune.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from metatune.space import stage1_trial_id
from metatune.trainers import registry


def config_entry(hp_json: str | None, hp_file: str | None, hp_index: int | None) -> dict:
    """Stage-1 trials are given their hyperparameters; stage-2, rerun and later-rung trials read their entry (its
    `hp`, and for a rerun the trial it came from) from the proposals, selection or promotions file, which does not
    exist yet when Snakemake builds the DAG. An `hp` of None: a vacant rung slot (fewer ok trials than the rung
    promotes)."""
    if hp_file is None:
        return {"hp": json.loads(hp_json)}
    configs = read_json(hp_file)["configs"]
    if hp_index is None or not 0 <= hp_index < len(configs):
        raise ValueError(f"{hp_file}: no configuration at index {hp_index} (it has {len(configs)})")
    return configs[hp_index]


def rerun_seed(base_seed: int, seed_index: int) -> int:
    """Rerun seed s of a configuration: new seeds, never the base seed stages 1 and 2 trained with."""
    return base_seed + 1000 + seed_index


def spec_from_args(args: argparse.Namespace) -> TrialSpec:
    """Build the TrialSpec from the stage's settings (one JSON per stage, from the config) and this trial's own
    arguments (its wildcards, and its hyperparameters for stage 1). A trial's Snakemake params are thus only
    what it depends on: adding a grid value changes no existing trial's params, so none of them reruns."""
    stage = json.loads(args.stage_settings)
    paths = {k: stage[k].format(dataset=args.dataset) for k in ("train_path", "val_path")}
    seed = stage["base_seed"] if args.seed_index is None else rerun_seed(stage["base_seed"], args.seed_index)
    rung_tokens = tuple(stage.get("rung_tokens", ()))
    rungs = {}
    if args.rung is not None:
        if not 0 <= args.rung < len(rung_tokens):
            raise ValueError(f"--rung {args.rung}: the stage has {len(rung_tokens)} rungs")
        rungs = {"rung": args.rung, "rung_tokens": rung_tokens, "stop_at_tokens": rung_tokens[args.rung],
                 "checkpoint_path": args.checkpoint_out,
                 "resume_from": None if args.resume_dir is None else
                 str(fidelity.slot_checkpoint(args.resume_dir, args.hp_index))}
    entry = config_entry(args.hp, args.hp_file, args.hp_index if args.hp_rank is None else args.hp_rank - 1)
    source = trial_id(args.dataset, entry["source_stage"], entry["source_run_id"]) if "source_run_id" in entry else None
    return TrialSpec(
        run_id=args.run_id, stage=stage["stage"], dataset=args.dataset, seed=seed, hp=entry["hp"],
        token_budget=stage["token_budget"], **paths,
        seq_len=stage["seq_len"], metafeatures_path=args.metafeatures, out_dir=str(Path(args.metrics).parent),
        trainer=stage["trainer"], settings=stage["training"], save_adapter=stage["save_adapter"], **rungs,
        round=args.round, rank=args.hp_rank, seed_index=args.seed_index, source_trial_id=source,
    )


def curve_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["step", "tokens", "train_loss", "val_loss"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k) for k in writer.fieldnames})
    return buf.getvalue()


def metrics_record(spec: TrialSpec, outcome: TrialOutcome, started_at: str | None = None,
                   finished_at: str | None = None) -> dict:
    def finite(x):
        return x if x is None or math.isfinite(x) else None

    return {
        "run_id": spec.run_id, "stage": spec.stage, "dataset": spec.dataset, "seed": spec.seed, "hp": spec.hp or {},
        "token_budget": spec.token_budget, "seq_len": spec.seq_len, "trainer": spec.trainer,
        "status": outcome.status, "val_loss": finite(outcome.val_loss), "best_val_loss": finite(outcome.best_val_loss),
        "train_loss": finite(outcome.train_loss), "tokens_seen": outcome.tokens_seen, "wall_s": outcome.wall_s,
        "gpu_hours": outcome.gpu_hours, "peak_mem_mb": outcome.peak_mem_mb,
        "tokens_per_s": finite(outcome.tokens_per_s), "device": outcome.device,
        "error": outcome.error, "versions": {"metatune": __version__, **outcome.versions},
        **{k: getattr(spec, k) for k in PLACEMENT_KEYS}, "started_at": started_at, "finished_at": finished_at,
        # cost: tokens_trained is everything this configuration has trained, earlier rungs included; of those,
        # tokens_resumed came with the checkpoint it continued from (so this trial cost the difference)
        "rung": spec.rung, "tokens_trained": outcome.tokens_seen, "tokens_resumed": outcome.tokens_resumed,
        "partial": spec.rung is not None and spec.rung < len(spec.rung_tokens) - 1,
        "config_id": stage1_trial_id(spec.hp) if spec.hp else None,
    }


def run(spec: TrialSpec) -> dict:
    """Train and record; any exception from the trainer becomes a `failed` trial with its reason. The trainer
    gets (and metrics.json records) every hyperparameter it reads: those the space leaves out at their defaults."""
    trainer = registry.get(spec.trainer)
    spec = replace(spec, hp=None if spec.hp is None else registry.complete_hp(spec.trainer, spec.hp))
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "spec.json", asdict(spec))
    started_at, start = utc_now(), time.monotonic()
    try:
        if spec.hp is None:
            raise ValueError("vacant rung slot: the previous rung had fewer ok trials than this rung promotes")
        outcome = import_module(trainer.module).train(spec)
    except Exception as e:  # a broken trial is data: record why and let the sweep go on
        traceback.print_exc()
        outcome = TrialOutcome(status="failed", wall_s=time.monotonic() - start,
                               error=f"{type(e).__name__}: {e}"[:2000])
    metrics = validate_metrics(metrics_record(spec, outcome, started_at, utc_now()))
    atomic_write_text(out / "curve.csv", curve_csv(outcome.curve))
    if spec.checkpoint_path and not Path(spec.checkpoint_path).exists():
        # A declared output even when the trial did not end ok; empty, and never promoted (fidelity.promote).
        atomic_write_bytes(spec.checkpoint_path, b"")
    atomic_write_json(out / "metrics.json", metrics)  # last: its existence means the trial is done
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one metatune trial.")
    parser.add_argument("--stage-settings", required=True, help="JSON: stage, token_budget, seq_len, trainer, ...")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--metafeatures", required=True, help="the dataset's metafeatures.json")
    parser.add_argument("--metrics", required=True, help="where metrics.json goes (its folder holds the rest)")
    parser.add_argument("--hp", help="the hyperparameters as JSON (stage 1)")
    parser.add_argument("--hp-file", help="or: proposals.json or selection.json to read them from")
    parser.add_argument("--hp-index", type=int, help="index into that file's configs")
    parser.add_argument("--round", type=int, help="stage-2 trials: the round that proposed them")
    parser.add_argument("--hp-rank", type=int, help="or: rank into selection.json's configs (1 is the best)")
    parser.add_argument("--seed-index", type=int, help="rerun trials: which of the new seeds")
    parser.add_argument("--rung", type=int, help="stage-1 rungs: which rung this trial ends at")
    parser.add_argument("--checkpoint-out", help="where the rung's checkpoint goes (every rung but the last)")
    parser.add_argument("--resume-dir", help="later rungs: the promoted checkpoints (slot = --hp-index)")
    metrics = run(spec_from_args(parser.parse_args(argv)))
    print(f"{metrics['run_id']}: {metrics['status']} val_loss={metrics['val_loss']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
