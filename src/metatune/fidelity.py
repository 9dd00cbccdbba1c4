"""Successive-halving rungs for stage 1: the rung schedule, and which configurations each rung promotes.

Every stage-1 configuration trains to the first rung's share of the token budget; the best ceil(n / eta) of each
rung continue from their checkpoints to the next rung, up to the full budget (Jamieson & Talwalkar 2016; Li et
al. 2018, Hyperband). The counts are fixed by the schedule, so the DAG is static: rung k has `n_trials` slots
whatever the losses turn out to be.

"Best" is decided by one of two promotion rules (docs/fidelity.md):
- `loss`: the validation loss at the rung, as plain successive halving, Optuna's SuccessiveHalvingPruner and ASHA;
- `learned`: each configuration's full-budget loss predicted from its partial curve by matching it against
  full curves of other datasets (and of this dataset's finished trials), so that slow starters whose curves
  would cross the fast ones are kept.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from metatune.io import DataError, iter_jsonl

if TYPE_CHECKING:
    import numpy as np

PROMOTIONS = ("auto", "learned", "loss")


@dataclass(frozen=True)
class FidelitySettings:
    """The config's `fidelity` section (config/schemas/config.schema.yaml documents each key)."""

    eta: int = 3
    min_fraction: float = 0.111
    promotion: str = "auto"  # auto: learned where there are prior curves, else loss
    keep_checkpoints: bool = False
    prior_curves: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, section: dict | None) -> FidelitySettings | None:
        """None when the section is absent or null: no rungs, every trial trains its whole budget."""
        if section is None:
            return None
        s = cls(**{**section, "prior_curves": tuple(section.get("prior_curves", ()))})
        if s.eta < 2:
            raise ValueError(f"fidelity.eta: {s.eta} must be at least 2")
        if not 0 < s.min_fraction <= 1:
            raise ValueError(f"fidelity.min_fraction: {s.min_fraction} must lie in (0, 1]")
        if s.promotion not in PROMOTIONS:
            raise ValueError(f"fidelity.promotion: {s.promotion!r} is not one of {PROMOTIONS}")
        return s

    def method(self) -> str:
        """The promotion rule in force: `auto` learns once there are curves to learn from."""
        if self.promotion == "auto":
            return "learned" if self.prior_curves else "loss"
        return self.promotion


@dataclass(frozen=True)
class Rung:
    index: int
    fraction: float  # of the token budget
    tokens: int  # what a trial has trained in total when it ends this rung
    n_trials: int


def n_rungs(settings: FidelitySettings) -> int:
    """Rungs at budget fractions eta^-(R-1), ..., eta^-1, 1, the first as close to min_fraction as that allows."""
    return 1 + max(0, round(math.log(1 / settings.min_fraction) / math.log(settings.eta)))


def rung_schedule(n_configs: int, token_budget: int, settings: FidelitySettings) -> list[Rung]:
    if n_configs < 1:
        raise ValueError(f"rung_schedule: {n_configs} configurations")
    last = n_rungs(settings) - 1
    rungs, n = [], n_configs
    for k in range(last + 1):
        fraction = float(settings.eta) ** (k - last)
        tokens = token_budget if k == last else max(1, round(token_budget * fraction))
        rungs.append(Rung(k, fraction, tokens, n))
        n = math.ceil(n / settings.eta)
    return rungs


# ---------------------------------------------------------------------------------------------------------------
# Curves: (fraction of the budget, validation loss) points, the loss finite.


@dataclass(frozen=True)
class Curve:
    dataset: str
    hp: dict
    fractions: np.ndarray  # increasing, in (0, 1]
    losses: np.ndarray
    start: float | None = None  # the loss before training (step 0), where the curve has it

    @classmethod
    def from_rows(cls, dataset: str, hp: dict, rows: list[dict], token_budget: int) -> Curve:
        """From curve.csv rows (tokens, val_loss): the points with a finite loss, step 0 apart."""
        import numpy as np

        finite = [(float(r["tokens"]) / token_budget, float(r["val_loss"])) for r in rows
                  if r.get("val_loss") not in (None, "") and math.isfinite(float(r["val_loss"]))]
        points = sorted(p for p in finite if p[0] > 0)
        start = next((y for f, y in finite if f == 0), None)
        f = np.array([p[0] for p in points], dtype=float)
        return cls(dataset, hp, f, np.array([p[1] for p in points], dtype=float), start)

    def reaches_budget(self) -> bool:
        return len(self.fractions) > 0 and self.fractions[-1] >= 0.98


def read_curves(paths) -> list[Curve]:
    """Curves from curves JSONL files: {dataset, hp, token_budget, curve: [{tokens, val_loss}]} per line (what
    rule fidelity_curves writes, and benchmarks/data/nanogpt_curves.jsonl). A curve that stops short of the full
    budget is a run that diverged or failed there: the learned promotion counts it as such."""
    out = []
    for path in paths:
        for number, record in enumerate(iter_jsonl(path), start=1):
            try:
                out.append(Curve.from_rows(record["dataset"], record["hp"], record["curve"], record["token_budget"]))
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
                raise DataError(f"{path}: line {number}: not a curve record ({type(e).__name__}: {e})") from None
    return out


def curve_record(m: dict, rows: list[dict]) -> dict:
    """One line of a curves JSONL: a trial's curve (rows of curve.csv, as text or numbers) with what it was a
    curve of; a loss that is not a finite number is null."""
    def loss(v):
        x = float(v) if v not in (None, "") else math.nan
        return x if math.isfinite(x) else None

    return {"dataset": m["dataset"], "hp": m["hp"], "token_budget": m["token_budget"], "status": m["status"],
            "curve": [{"tokens": int(float(r["tokens"])), "val_loss": loss(r["val_loss"])} for r in rows]}


# ---------------------------------------------------------------------------------------------------------------
# The learned prediction (docs/fidelity.md): each reference curve, shifted in log loss to fit the partial curve,
# predicts the final loss; the predictions are averaged with weights for how well the shape fits and how close
# the reference's hyperparameters are (the learning rate decides the shape: fast-then-flat or slow-but-better).

FIT_SCALE = 0.01  # relative misfit at which a reference's weight falls to exp(-1/2)
HP_SCALE = 0.3  # hyperparameter distance (in decades of the learning rate, say) likewise
SAME_DATASET_WEIGHT = 4.0  # this dataset's own finished trials count as several of another dataset's


def hp_distance(a: dict, b: dict) -> float:
    """Euclidean distance over the shared hyperparameters: decades for positive numbers, tenths for a zero (a
    dropout of 0 against 0.1 is 1), 1 for a different category. Summed, not averaged, so that a learning rate
    three times larger is as far whatever the number of other parameters. Curves of other datasets may come
    from another search space: only shared keys count, and none shared is far."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return math.inf
    total = 0.0
    for k in keys:
        x, y = a[k], b[k]
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            d = math.log10(x / y) if x > 0 and y > 0 else (x - y) * 10
            total += d * d
        else:
            total += float(x != y)
    return math.sqrt(total)


@dataclass(frozen=True)
class Prediction:
    value: float | None  # the predicted validation loss at the full budget (None: no reference finished)
    p_diverge: float  # the weighted share of matching references that never reached the full budget
    n_references: int
    effective_references: float  # (sum w)^2 / sum w^2: how many references the prediction leans on


def match(partial: Curve, ref: Curve, seen) -> tuple[float, float] | None:
    """(predicted final loss, relative misfit) of one reference fitted to the partial curve's points `seen`.

    With both start losses (step 0) known, the fit is affine, y = a + b r, through the start and the partial
    points: it predicts that this run will have made the same share of the reference's whole improvement, which
    holds across datasets whose losses fall by different amounts. Without them, a constant factor (a shift in
    log loss) is all that a few nearby points determine."""
    import numpy as np

    f, y = partial.fractions[seen], partial.losses[seen]
    r = np.interp(f, ref.fractions, ref.losses)
    w = f / f.sum()  # later points say more about where the curve is going
    if partial.start is not None and ref.start is not None:
        x, t = np.append(ref.start, r), np.append(partial.start, y)
        w = np.append(1.0, w)
        xm, tm = np.dot(w, x) / w.sum(), np.dot(w, t) / w.sum()
        var = np.dot(w, (x - xm) ** 2)
        if var <= 1e-12 * (1 + xm * xm):
            return None
        b = np.dot(w, (x - xm) * (t - tm)) / var
        if b <= 0:  # a reference that improves where this run gets worse predicts nothing
            return None
        a = tm - b * xm
        misfit = math.sqrt(np.dot(w, (t - a - b * x) ** 2) / w.sum()) / tm
        return float(a + b * ref.losses[-1]), float(misfit)
    shift = float(np.dot(w, np.log(y) - np.log(r)))
    misfit = math.sqrt(float(np.dot(w, (np.log(y) - np.log(r) - shift) ** 2)))
    return float(math.exp(shift) * ref.losses[-1]), misfit


def predict_final(partial: Curve, references: list[Curve]) -> Prediction | None:
    """Predict the loss at the full budget from a partial curve; None without a usable reference. References
    that stopped short of the full budget (diverged or failed) count towards the chance of diverging."""
    import numpy as np

    if len(partial.fractions) == 0:
        return None
    preds, weights, failed_weight = [], [], 0.0
    for ref in references:
        if len(ref.fractions) == 0:
            continue
        seen = partial.fractions <= ref.fractions[-1]
        if not seen.any() or ref.fractions[0] > partial.fractions[seen][-1]:
            continue
        fitted = match(partial, ref, seen)
        if fitted is None:
            continue
        pred, misfit = fitted
        w = math.exp(-0.5 * (misfit / FIT_SCALE) ** 2 - 0.5 * (hp_distance(partial.hp, ref.hp) / HP_SCALE) ** 2)
        if ref.dataset == partial.dataset:
            w *= SAME_DATASET_WEIGHT
        if ref.reaches_budget():
            if pred > 0:
                preds.append(math.log(pred))
                weights.append(w)
        else:
            failed_weight += w
    total = sum(weights) + failed_weight
    if total <= 1e-300:
        return None
    if not weights or sum(weights) <= 1e-300:
        return Prediction(None, 1.0, len(preds), 0.0)
    w = np.array(weights) / sum(weights)
    return Prediction(float(math.exp(np.dot(w, preds))), failed_weight / total, len(preds),
                      float(1 / np.sum(w ** 2)))


# ---------------------------------------------------------------------------------------------------------------
# Promotion: the ranking of one rung and the configurations that continue.


@dataclass(frozen=True)
class RungTrial:
    run_id: str
    config_id: str
    status: str
    hp: dict
    loss: float | None  # validation loss at the rung (None unless ok)
    curve: Curve
    checkpoint: str  # the checkpoint file the trial wrote at this rung


def promote(trials: list[RungTrial], n_promote: int, method: str, references: list[Curve]) -> dict:
    """Rank the rung's trials and promote the best `n_promote`; the record says why each was or was not.

    Trials that did not end ok are never promoted: their slots stay vacant (the DAG's count is fixed)."""
    if method not in ("learned", "loss"):
        raise ValueError(f"promote: method {method!r}")
    rows = []
    for t in trials:
        row = {"run_id": t.run_id, "config_id": t.config_id, "status": t.status, "hp": t.hp,
               "loss_at_rung": t.loss, "predicted_final": None, "score": None}
        if t.status == "ok":
            row["score"] = t.loss
            if method == "learned":
                # The same configuration's own earlier runs (other seeds, other stages) are not a prior for it.
                others = [r for r in references if not (r.dataset == t.curve.dataset and r.hp == t.hp)]
                pred = predict_final(t.curve, others)
                if pred is not None:
                    row["predicted_final"] = pred.value
                    row["p_diverge"] = round(pred.p_diverge, 4)
                    row["effective_references"] = round(pred.effective_references, 2)
                    row["score"] = pred.value if pred.value is not None else t.loss
        rows.append(row)
    # Trials the references say will diverge go after the rest (they may still fill slots nothing else can).
    ranked = sorted(rows, key=lambda r: (r["score"] is None, r.get("p_diverge", 0.0) > 0.5,
                                         r["score"] if r["score"] is not None else 0.0, r["run_id"]))
    promoted = []
    for rank, row in enumerate(ranked, start=1):
        row["rank"] = rank
        what = "predicted full-budget loss" if row["predicted_final"] is not None else "loss at the rung"
        if row.get("p_diverge", 0.0) > 0.5:
            what += f" (but predicted to diverge, p={row['p_diverge']:.2f})"
        if row["score"] is None:
            row["promoted"], row["reason"] = False, f"not promoted: the trial ended {row['status']}"
        elif len(promoted) < n_promote:
            row["promoted"], row["reason"] = True, f"promoted: {what} {row['score']:.6g} ranks {rank} of {len(rows)}"
            promoted.append(row)
        else:
            cut = promoted[-1]["score"]
            row["promoted"], row["reason"] = False, (f"not promoted: {what} {row['score']:.6g} is worse than the "
                                                     f"last promoted ({cut:.6g}); {n_promote} slots")
    by_run = {t.run_id: t for t in trials}
    slots = []
    for j in range(n_promote):
        if j < len(promoted):
            row = promoted[j]
            slots.append({"slot": j, "hp": row["hp"], "config_id": row["config_id"], "from_run_id": row["run_id"],
                          "checkpoint": by_run[row["run_id"]].checkpoint})
        else:
            slots.append({"slot": j, "hp": None, "vacant": f"only {len(promoted)} ok trials to promote into "
                                                           f"{n_promote} slots"})
    return {"method": method, "n_trials": len(trials), "n_promoted": len(promoted), "ranking": ranked, "configs": slots}


def slot_checkpoint(resume_dir: str | Path, slot: int) -> Path:
    """Where rule promote puts the checkpoint that slot `slot` of the next rung resumes."""
    return Path(resume_dir) / f"slot{slot}.ckpt"


def link_checkpoint(source: str | Path, target: str | Path) -> None:
    """The promoted trial's checkpoint under the slot's name: a hard link (no copy, and the source may then be
    deleted as a temp file), or a copy across file systems."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def read_curve_csv(path: str | Path) -> list[dict]:
    import csv

    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def promote_rung(collected: list, checkpoints: list[str], rung: Rung, next_rung: Rung, method: str,
                 references: list[Curve]) -> dict:
    """The promotions record of one dataset's rung: `collected` are the rung's trials (history.CollectedTrial),
    `checkpoints` the files they wrote (matched by folder)."""
    by_folder = {str(Path(c).parent): c for c in checkpoints}
    trials = []
    for trial in collected:
        m, folder = trial.metrics, str(Path(trial.path).parent)
        if folder not in by_folder:
            raise ValueError(f"{trial.path}: no checkpoint among the rung's checkpoints")
        rows = read_curve_csv(Path(folder) / "curve.csv")
        trials.append(RungTrial(m["run_id"], m["config_id"], m["status"], m["hp"],
                                m["val_loss"] if m["status"] == "ok" else None,
                                Curve.from_rows(m["dataset"], m["hp"], rows, m["token_budget"]), by_folder[folder]))
    record = promote(trials, next_rung.n_trials, method, references)
    return {"rung": next_rung.index, "from_rung": rung.index, "tokens_at_rung": rung.tokens,
            "tokens_next_rung": next_rung.tokens, "n_references": len(references), **record}


def _vacant(m: dict) -> bool:
    return m.get("rung") is not None and not m["hp"]


def full_budget(metrics: list[dict]) -> list[dict]:
    """The trials that trained the whole budget: what the reruns choose from (a loss at a rung does not compare
    with a full-budget one). Vacant slots are no configuration."""
    return [m for m in metrics if not m.get("partial") and not _vacant(m)]


def furthest_rungs(metrics: list[dict]) -> list[dict]:
    """One trial per configuration for the optimizer's history: the furthest rung it reached (trials without
    rungs pass as they are). A pruned configuration keeps the loss at its last rung, which overstates its
    full-budget loss, as its pruning judged: the optimizer still learns where the bad regions are."""
    furthest: dict[tuple, dict] = {}
    out = []
    for m in metrics:
        if m.get("rung") is None:
            out.append(m)
        elif not _vacant(m):
            key = (m["dataset"], m["stage"], m["config_id"])
            if key not in furthest or m["rung"] > furthest[key]["rung"]:
                furthest[key] = m
    return out + list(furthest.values())


def write_curves(out: str | Path, collected: list) -> int:
    """The curves JSONL of the collected trials (history.CollectedTrial) that trained the full budget, read
    from the curve.csv beside each metrics.json; returns the number written."""
    from metatune.io import atomic_write_jsonl

    full = {id(m) for m in full_budget([t.metrics for t in collected])}
    return atomic_write_jsonl(out, (curve_record(t.metrics, read_curve_csv(Path(t.path).with_name("curve.csv")))
                                    for t in collected if id(t.metrics) in full))
