"""The transfer surrogate: a weighted ensemble of one GP per dataset (RGPE, Feurer et al. 2018).

- Each source dataset gets its own GP on its normal-scored trials (tasks.py); the target gets one too, once it
  has trials, with the sources' lengthscales (a handful of target trials cannot estimate one per coordinate).
- Prior weights come from metafeatures: a source close to the target weighs more. Which metafeatures count is
  learned from the sources themselves: a metafeature matters in proportion to how well a difference in it goes
  with two sources ranking each other's trials differently (a learned metric, as in TST-R, Wistuba et al. 2016).
- With target trials, weights come from how well each model ranks them (RGPE): the share of bootstrap samples
  of the target's trials on which the model misranks the fewest pairs, the target model judged by its
  leave-one-out predictions. Ties, common with few trials, are split by the prior weights, so the metafeatures
  lead at first and the target's own evidence takes over as it accumulates. Sources that rank the target much
  worse than its own model are dropped (RGPE's guard against weight dilution).
- Feasibility: a kernel estimate of the failure rate near a point, from the target's trials and from the
  weighted sources' trials, the larger of the two: a region that failed on the target or on similar datasets
  is avoided.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from metatune.optimizer import gp as gplib
from metatune.optimizer.tasks import Task, subsample

NEGLIGIBLE = 1e-3  # a model weighing less is left out of predictions


@dataclass(frozen=True)
class EnsembleSettings:
    max_source_trials: int = 80  # per source GP: its fit is cubic in this
    max_target_trials: int = 300  # the target's GP and its RGPE ranking (its best trials are always kept)
    bootstrap: int = 64  # RGPE bootstrap samples of the target's trials
    neighbours: int = 3  # prior-weight bandwidth: the distance to the k-th nearest source
    dilution_quantile: float = 0.95  # drop a source whose median loss exceeds this quantile of the target's
    fail_pseudocount: float = 0.5  # kernel mass of "no evidence" in the failure-rate estimate


@dataclass(frozen=True)
class Ensemble:
    models: list[gplib.GP]  # the sources', then the target's if it has one
    weights: np.ndarray
    prior: np.ndarray  # metafeature weights of the sources
    distances: np.ndarray  # metafeature distances of the sources to the target
    sources: list[Task]
    target: Task | None
    lengthscales: np.ndarray
    notes: tuple[str, ...] = ()  # where the ensemble fell back on something simpler, and why

    def predict(self, x: np.ndarray, variance: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Weighted mean and variance (sum of w^2 var, as RGPE) of the normalized objective. Models of
        negligible weight are skipped (and the rest renormalized): they would change nothing but the cost."""
        weights = renormalized(self.weights)
        mu, var = np.zeros(len(x)), np.zeros(len(x))
        for w, model in zip(weights, self.models):
            if w > 0:
                m, v = model.predict(x, variance)
                mu += w * m
                var += w * w * v if variance else 0.0
        return mu, var

    def fail_rate(self, x: np.ndarray, pseudocount: float) -> np.ndarray:
        """Estimated probability that a configuration fails (max of the target's and the sources')."""
        w = self.weights[: len(self.sources)]
        w = renormalized(w if w.sum() > 0 else self.prior)
        source = sum(wi * kernel_rate(x, s, self.lengthscales, pseudocount)
                     for wi, s in zip(w, self.sources) if wi > 0)
        own = kernel_rate(x, self.target, self.lengthscales, pseudocount) if self.target is not None else 0.0
        return np.maximum(source, own) if len(self.sources) else own + np.zeros(len(x))


def renormalized(weights: np.ndarray) -> np.ndarray:
    """The weights without the negligible ones, summing to 1 again. With hundreds of sources of equal weight
    each is below NEGLIGIBLE: then the largest ones count."""
    keep = weights >= min(NEGLIGIBLE, weights.max(initial=0.0))
    kept = weights * keep
    return kept / kept.sum() if kept.sum() > 0 else kept


def kernel_rate(x: np.ndarray, task: Task, lengthscales: np.ndarray, pseudocount: float) -> np.ndarray:
    if not len(task.failed):
        return np.zeros(len(x))
    k = gplib.matern52(x, task.x, lengthscales)
    return (k @ task.failed) / (k.sum(1) + pseudocount)


def misranked_pairs(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Matrix of the pairs (i, j) with y_i < y_j that `pred` puts the other way round."""
    return (y[:, None] < y[None, :]) & (pred[:, None] >= pred[None, :])


@functools.lru_cache(maxsize=64)
def _cross_losses(data: tuple[tuple[bytes, bytes, int], ...]) -> np.ndarray:
    """loss[i, j]: the share of source j's trial pairs that source i's model ranks the wrong way round."""
    tasks = [(np.frombuffer(x).reshape(len(np.frombuffer(z)), d), np.frombuffer(z)) for x, z, d in data]
    models = [gplib.fit(x, z) for x, z in tasks]
    loss = np.zeros((len(tasks), len(tasks)))
    for i, model in enumerate(models):
        for j, (x, z) in enumerate(tasks):
            if i != j:
                loss[i, j] = misranked_pairs(model.predict(x, variance=False)[0], z).sum() / max(
                    1, (z[:, None] < z[None, :]).sum())
    return loss


def metric_relevance(sources: list[Task], mf: np.ndarray) -> np.ndarray:
    """One weight per metafeature column: the rank correlation, over pairs of sources, between the difference
    in that metafeature and how badly one source's model ranks the other's trials (clipped at 0). The losses
    depend on the sources alone, so they are memoized like the fits."""
    n = len(sources)
    if n < 3 or mf.shape[1] == 0:
        return np.ones(mf.shape[1])
    loss = _cross_losses(tuple((s.x.tobytes(), s.z.tobytes(), s.x.shape[1]) for s in sources))
    i, j = np.where(~np.eye(n, dtype=bool))
    gaps, pair_loss = np.abs(mf[i] - mf[j]), loss[i, j]
    if not pair_loss.std() > 0:  # every source ranks every other alike: the losses say nothing
        return np.ones(mf.shape[1])
    rel = np.array([spearmanr(gaps[:, k], pair_loss).statistic if gaps[:, k].std() > 0 else 0.0
                    for k in range(mf.shape[1])])
    rel = np.clip(np.nan_to_num(rel), 0.0, None)
    return rel if rel.sum() > 0 else np.ones(mf.shape[1])


def prior_weights(distances: np.ndarray, neighbours: int) -> np.ndarray:
    if not len(distances):
        return distances
    bandwidth = max(np.sort(distances)[min(neighbours, len(distances)) - 1], 1e-6)
    w = np.exp(-((distances / bandwidth) ** 2))
    return w / w.sum()


def rgpe_weights(models: list[gplib.GP], target: Task, prior: np.ndarray, settings: EnsembleSettings,
                 rng: np.random.Generator) -> np.ndarray:
    """RGPE weights of the sources' models and the target's model (last), from bootstrapped ranking losses."""
    y = target.z
    preds = [m.predict(target.x, variance=False)[0] for m in models[:-1]] + [models[-1].loo_mean()]
    wrong = np.stack([misranked_pairs(p, y) for p in preds])  # (models, n, n)
    samples = rng.integers(0, len(y), size=(settings.bootstrap, len(y)))
    losses = np.stack([wrong[:, s][:, :, s].sum((1, 2)) for s in samples])  # (bootstrap, models)
    # The target model ties like the nearest source; ties are split by these prior shares.
    shares = np.r_[prior, prior.max() if len(prior) else 1.0]
    best = losses == losses.min(1, keepdims=True)
    credit = best * shares
    # A sample won only by sources of no prior weight (far ones, whose prior underflows) splits evenly among them.
    credit = np.where(credit.sum(1, keepdims=True) > 0, credit, best)
    weights = (credit / credit.sum(1, keepdims=True)).mean(0)
    if len(y) >= 3:
        limit = np.quantile(losses[:, -1], settings.dilution_quantile)
        weights[:-1][np.median(losses[:, :-1], 0) > limit] = 0.0
    if not weights.sum() > 0:  # every winner was dropped: the target's own model is all that is left
        weights = np.r_[np.zeros(len(models) - 1), 1.0]
    return weights / weights.sum()


def build(tasks: dict[str, Task], target: str, mf: dict[str, np.ndarray], dim: int, settings: EnsembleSettings,
          use_target: bool, rng: np.random.Generator) -> Ensemble:
    """The ensemble for `target` (points have `dim` coordinates); `use_target=False` ignores the target's
    trials (zero-shot)."""
    sources = [subsample(t, settings.max_source_trials) for name, t in tasks.items()
               if name != target and len(t.z) >= 2]
    models = [gplib.fit(s.x, s.z) for s in sources]
    mine = tasks.get(target) if use_target else None
    if mine is not None and not len(mine.z):
        mine = None
    if mine is not None:
        mine = subsample(mine, settings.max_target_trials)
    if models:
        lengthscales = np.exp(np.mean([np.log(m.lengthscales) for m in models], 0))
        signal = float(np.exp(np.mean([np.log(m.signal) for m in models])))
        noise = float(np.exp(np.mean([np.log(m.noise) for m in models])))
    elif mine is not None and len(mine.z) >= 2:
        own = gplib.fit(mine.x, mine.z)
        lengthscales, signal, noise = own.lengthscales, own.signal, own.noise
    else:
        lengthscales, signal, noise = np.full(dim, 0.3), 1.0, 0.05

    source_mf = np.array([mf[s.name] for s in sources]).reshape(len(sources), len(mf[target]))
    notes = []
    relevance = metric_relevance(sources, source_mf)
    gaps = source_mf - mf[target]
    distances = np.sqrt((gaps ** 2 * relevance).sum(1) / relevance.sum()) if relevance.size else np.zeros(len(sources))
    prior = prior_weights(distances, settings.neighbours)

    if mine is not None and len(mine.z) >= 2:
        models = models + [gplib.build(mine.x, mine.z, lengthscales, signal, noise)]
        weights = rgpe_weights(models, mine, prior, settings, rng) if len(sources) else np.ones(1)
        if not sources:
            notes.append("no other dataset with 2+ trials: the target's own trials only")
    else:
        weights = prior
        if mine is not None:
            notes.append("the target has 1 trial: too few for its own model, so the other datasets' alone")
    if not models:
        notes.append("no dataset with 2+ trials to model")
    return Ensemble(models, weights, prior, distances, sources, mine, lengthscales, tuple(notes))
