"""Every trial as an Optuna JournalStorage file, so `optuna-dashboard results/optuna/journal.log` can browse the
sweep: one study per dataset and stage, each trial with its hyperparameters under the config's distributions, its
validation loss, and its run id, status and metrics as attributes. Trials that did not end ok are FAIL trials.
With successive-halving rungs a configuration is one trial, as in Optuna's own pruners: its furthest rung, PRUNED
with its learning curve as intermediate values (step = tokens trained) when it stopped before the full budget."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

from metatune.contract import METRIC_FIELDS
from metatune.export import natural_key
from metatune.fidelity import furthest_rungs, read_curve_csv
from metatune.space import Space

STAGES = ("stage1", "stage2", "rerun")


def study_name(dataset: str, stage: str) -> str:
    return f"{dataset}/{stage}"


def frozen_trial(m: dict, dists: dict, curve: list[dict] | None = None):
    import optuna

    ok = m["status"] == "ok"
    State = optuna.trial.TrialState
    return optuna.trial.create_trial(
        state=State.FAIL if not ok else State.PRUNED if m.get("partial") else State.COMPLETE,
        value=m["val_loss"] if ok else None,
        params={k: m["hp"][k] for k in dists},
        distributions=dists,
        intermediate_values={int(float(r["tokens"])): float(r["val_loss"]) for r in curve or []
                             if float(r["tokens"]) > 0 and r["val_loss"] not in (None, "")
                             and math.isfinite(float(r["val_loss"]))},
        user_attrs={"run_id": m["run_id"], "status": m["status"], "seed": m["seed"], "error": m["error"],
                    "device": m["device"], "trainer": m["trainer"], "metrics": {k: m[k] for k in METRIC_FIELDS}},
    )


def rung_curves(collected) -> dict[tuple, list[dict]]:
    """The curves of the collected trials (history.CollectedTrial) that ran at rungs, by (dataset, stage, run_id):
    only those, as a sweep without rungs has no pruned trial and thousands of curves to read."""
    return {(t.metrics["dataset"], t.metrics["stage"], t.metrics["run_id"]):
            read_curve_csv(Path(t.path).with_name("curve.csv")) for t in collected if t.metrics.get("rung") is not None}


def write_journal(path: str | Path, metrics: list[dict], space: dict, dataset_order: list[str],
                  curves: dict[str, list[dict]] | None = None) -> dict[str, int]:
    """Write the journal (replacing any earlier one whole); returns the number of trials per study. `curves`:
    the curve.csv rows of the rung trials, by (dataset, stage, run_id)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {p.name: p.optuna_distribution() for p in Space.parse(space)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A journal is appended to: build it beside the target and move it in, so a reader never sees half a sweep.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp)))
    counts = {}
    for dataset in dataset_order:
        for stage in STAGES:
            mine = furthest_rungs([m for m in metrics if m["dataset"] == dataset and m["stage"] == stage])
            if not mine:
                continue
            study = optuna.create_study(storage=storage, study_name=study_name(dataset, stage), direction="minimize")
            with warnings.catch_warnings():  # experimental, and what labels the objective in the dashboard
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(["val_loss"])
            study.set_user_attr("dataset", dataset)
            study.set_user_attr("stage", stage)
            study.add_trials([frozen_trial(m, dists, (curves or {}).get((dataset, stage, m["run_id"])))
                              for m in sorted(mine, key=lambda m: natural_key(m["run_id"]))])
            counts[study.study_name] = len(mine)
    os.replace(tmp, path)
    return counts
