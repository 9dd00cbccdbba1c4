"""The sweep as Optuna JournalStorage files, for `optuna-dashboard`: one study per dataset and stage.

Each stage-1 and stage-2 trial is an Optuna trial with its real start and end (started_at and finished_at of its
metrics.json), its validation-loss curve as intermediate values (step = tokens seen), its hyperparameters under
the config's distributions, and one user attribute per metric, so the dashboard can sort and filter by any of
them. Stage-1 parameters the grid held at one value get a single-value distribution: Optuna's importance
evaluators skip those. A rerun study has one trial per configuration, its value the mean over seeds, so its best
trial is best.csv's winner; a configuration with a failed seed is a FAIL trial, as it cannot win. With
successive-halving rungs a configuration is one trial, as in Optuna's own pruners: its furthest rung, PRUNED (with
its curve) when it stopped before the full budget.

Two files: results/optuna/live.log grows as each collection lands (rule optuna_live appends under Optuna's file
lock), so the dashboard follows a running sweep; results/optuna/journal.log is written whole from every
collection once the sweep is done, the reference (a trial redone after it landed stays in live.log as it was).
"""

from __future__ import annotations

import csv
import math
import os
import statistics
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

from metatune.contract import METRIC_FIELDS, PLACEMENT_KEYS, parse_utc, trial_id
from metatune.fidelity import furthest_rungs
from metatune.history import CollectedTrial, read_collections
from metatune.space import Space

STAGES = ("stage1", "stage2", "rerun")
TRIAL_ATTRS = ("run_id", "status", "seed", *PLACEMENT_KEYS, "device", "trainer", "error", *METRIC_FIELDS,
               "tokens_per_s", "rung", "tokens_trained")
# A rerun configuration's cost is the sum over its seeds, its peak memory their largest, its losses means over
# the ok seeds.
SUMMED = ("tokens_seen", "wall_s", "gpu_hours")


def study_name(dataset: str, stage: str) -> str:
    return f"{dataset}/{stage}"


def fixed_params(space: dict, stage: str) -> dict:
    """The hyperparameters a stage held at one value: stage 1's grids of one value (stage 2 searches all)."""
    if stage != "stage1":
        return {}
    return {name: p["grid"][0] for name, p in space.items() if len(p.get("grid", ())) == 1}


def stage_distributions(space: dict, stage: str) -> dict:
    import optuna

    dists = {p.name: p.optuna_distribution() for p in Space.parse(space)}
    for name, value in fixed_params(space, stage).items():
        if isinstance(dists[name], optuna.distributions.CategoricalDistribution):
            dists[name] = optuna.distributions.CategoricalDistribution([value])
        else:
            dists[name] = type(dists[name])(value, value, log=dists[name].log)
    return dists


def read_curve(metrics_path: str) -> dict[int, float]:
    """The validation losses of the curve.csv beside a metrics.json, by tokens seen (rows without one skipped)."""
    curve = Path(metrics_path).with_name("curve.csv")
    if not curve.is_file():
        return {}
    with open(curve, newline="") as f:
        rows = [(r.get("tokens"), r.get("val_loss")) for r in csv.DictReader(f)]
    out = {}
    for tokens, loss in rows:
        try:
            step, value = int(float(tokens)), float(loss)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            out[step] = value
    return out


def times(collected: CollectedTrial) -> tuple[datetime, datetime]:
    """When the trial ran; a metrics.json from before started_at/finished_at were recorded gives its file's
    modification time as the end, and its wall_s before that as the start."""
    m = collected.metrics
    if m.get("started_at") and m.get("finished_at"):
        return parse_utc(m["started_at"]), parse_utc(m["finished_at"])
    path = Path(collected.path)
    end = datetime.fromtimestamp(path.stat().st_mtime if path.exists() else 0, UTC)
    return end - timedelta(seconds=m["wall_s"] or 0.0), end


def frozen(state_ok: bool, value, hp: dict, dists: dict, attrs: dict, curve: dict, start, end, pruned=False):
    import optuna

    State = optuna.trial.TrialState
    return optuna.trial.FrozenTrial(
        number=0, trial_id=0,  # the storage numbers trials as they are added
        state=State.FAIL if not state_ok else State.PRUNED if pruned else State.COMPLETE,
        value=value if state_ok else None, values=None, datetime_start=start, datetime_complete=end,
        params={k: hp[k] for k in dists}, distributions=dists, user_attrs=attrs, system_attrs={},
        intermediate_values=curve,
    )


def search_trial(collected: CollectedTrial, dists: dict):
    m = collected.metrics
    attrs = {"trial_id": trial_id(m["dataset"], m["stage"], m["run_id"]), **{k: m.get(k) for k in TRIAL_ATTRS}}
    return frozen(m["status"] == "ok", m["val_loss"], m["hp"], dists, attrs, read_curve(collected.path),
                  *times(collected), pruned=bool(m.get("partial")))


def rerun_trials(trials: list[CollectedTrial], dists: dict) -> list:
    """One trial per rerun configuration (by rank): its value the mean val_loss over seeds, its seeds' losses
    and trial ids as attributes, its curve the seeds' mean where every seed has a point."""
    by_rank: dict[int, list[CollectedTrial]] = {}
    for t in trials:
        by_rank.setdefault(t.metrics["rank"], []).append(t)
    out = []
    for rank in sorted(by_rank):
        seeds = sorted(by_rank[rank], key=lambda t: t.metrics["seed_index"])
        ms = [t.metrics for t in seeds]
        ok = [m for m in ms if m["status"] == "ok"]
        losses = [m["val_loss"] for m in ok]
        attrs = {"rank": rank, "source_trial_id": ms[0].get("source_trial_id"), "n_seeds": len(ms),
                 "n_failed": len(ms) - len(ok),
                 "seed_trial_ids": [trial_id(m["dataset"], m["stage"], m["run_id"]) for m in ms],
                 "seeds": [m["seed"] for m in ms],
                 **{f"val_loss_seed{m['seed_index']}": m["val_loss"] for m in ms},
                 "mean_val_loss": statistics.fmean(losses) if losses else None,
                 "std_val_loss": statistics.stdev(losses) if len(losses) > 1 else None,
                 **{k: sum(m[k] or 0 for m in ms) for k in SUMMED}}
        for k in ("best_val_loss", "train_loss"):
            values = [m[k] for m in ok if m[k] is not None]
            attrs[k] = statistics.fmean(values) if values else None
        attrs["peak_mem_mb"] = max((m["peak_mem_mb"] for m in ms if m["peak_mem_mb"] is not None), default=None)
        curves = [read_curve(t.path) for t in seeds]
        shared = set.intersection(*(set(c) for c in curves)) if curves else set()
        curve = {step: statistics.fmean(c[step] for c in curves) for step in sorted(shared)}
        spans = [times(t) for t in seeds]
        out.append(frozen(len(ok) == len(ms), attrs["mean_val_loss"], ms[0]["hp"], dists, attrs, curve,
                          min(s for s, _ in spans), max(e for _, e in spans)))
    return out


def stage_trials(stage: str, trials: list[CollectedTrial], space: dict) -> list:
    dists = stage_distributions(space, stage)
    if stage == "rerun":
        return rerun_trials(trials, dists)
    furthest = {id(m) for m in furthest_rungs([t.metrics for t in trials])}
    return [search_trial(t, dists) for t in trials if id(t.metrics) in furthest]


def open_study(storage, dataset: str, stage: str, space: dict, first: dict):
    """The dataset's study of this stage in `storage`, created with its settings as attributes if new."""
    import optuna

    study = optuna.create_study(storage=storage, study_name=study_name(dataset, stage), direction="minimize",
                                load_if_exists=True)
    if "stage" not in study.user_attrs:
        with warnings.catch_warnings():  # experimental, and what labels the objective in the dashboard
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["mean_val_loss" if stage == "rerun" else "val_loss"])
        for key, value in {"dataset": dataset, "stage": stage, "fixed_params": fixed_params(space, stage),
                           **{k: first[k] for k in ("token_budget", "seq_len", "trainer") if k in first}}.items():
            study.set_user_attr(key, value)
    return study


def journal_storage(path: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def grouped(trials: list[CollectedTrial]) -> dict[tuple[str, str], list[CollectedTrial]]:
    out: dict[tuple[str, str], list[CollectedTrial]] = {}
    for t in trials:
        out.setdefault((t.metrics["dataset"], t.metrics["stage"]), []).append(t)
    return out


def append_collection(path: str | Path, collection: str | Path, space: dict) -> int:
    """Add a collection's trials to the journal at `path` (rule optuna_live), skipping those it already holds
    (a collection built again); returns how many were added. Safe beside other writers: Optuna locks the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = journal_storage(path)
    added = 0
    for (dataset, stage), trials in grouped(read_collections([collection])).items():
        study = open_study(storage, dataset, stage, space, trials[0].metrics)
        key = "rank" if stage == "rerun" else "trial_id"
        present = {t.user_attrs.get(key) for t in study.get_trials(deepcopy=False)}
        new = [t for t in stage_trials(stage, trials, space) if t.user_attrs[key] not in present]
        study.add_trials(new)
        added += len(new)
    return added


def write_journal(path: str | Path, collections: list[str], space: dict, dataset_order: list[str]) -> dict[str, int]:
    """Write the whole journal from every collection (replacing any earlier one); returns trials per study."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A journal is appended to: build it beside the target and move it in, so a reader never sees half a sweep.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    storage = journal_storage(tmp)
    groups = grouped(read_collections(collections))
    counts = {}
    for dataset in dataset_order:
        for stage in STAGES:
            trials = groups.get((dataset, stage))
            if not trials:
                continue
            study = open_study(storage, dataset, stage, space, trials[0].metrics)
            study.add_trials(stage_trials(stage, trials, space))
            counts[study.study_name] = len(study.trials)
    os.replace(tmp, path)
    return counts
