"""Can the winner be trusted? Paired comparisons of rerun configurations by seed, and a verdict per dataset.

Rerun seed s of every top-K configuration trains with the same seed (metatune.trial.rerun_seed: the same data
order, and the same initialisation where the trainer allows), so the losses of two configurations pair by seed
and their difference on a seed cancels what the seed did to both. For each configuration against the winner:

    d_s = loss(config, s) - loss(winner, s)   over the seeds both finished ok (positive: the winner is better)

The mean of d with a 95% t-interval, and the probability that the configuration is truly better than the
winner: the posterior P(mean d < 0) under the reference prior p(mu, sigma) ~ 1/sigma, a Student t with n - 1
degrees of freedom around the mean d (docs/verdicts.md says why not a bootstrap). The verdict of a dataset is
`settled` when every other configuration is separated from the winner (its interval lies above zero, or it
failed on a seed where the winner did not), `tied` with those that are not, and `unsettled` when there is no
interval to judge by (fewer than MIN_SEEDS paired seeds, one configuration rerun, or no winner).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# An interval needs n - 1 >= 2 degrees of freedom to mean anything: with two seeds t(0.975, 1) = 12.7.
MIN_SEEDS = 3
VERDICTS = ("settled", "tied", "unsettled")
# How a configuration compares with its dataset's winner (best.csv's `comparison`).
COMPARISONS = ("winner", "worse", "failed", "not separated", "too few seeds", "no winner")


def t_quantile_975(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def t_cdf(x: float, df: int) -> float:
    from scipy.stats import t

    return float(t.cdf(x, df))


@dataclass(frozen=True)
class Interval:
    """Mean, sample standard deviation and 95% t-interval of a sample; NaN where the sample is too small."""

    n: int
    mean: float
    std: float
    low: float
    high: float


def t_interval(values: list[float]) -> Interval:
    n = len(values)
    mean = statistics.fmean(values) if values else math.nan
    std = statistics.stdev(values) if n > 1 else math.nan
    if n < MIN_SEEDS:
        return Interval(n, mean, std, math.nan, math.nan)
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return Interval(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Paired:
    """A configuration against the winner over their common ok seeds."""

    interval: Interval  # of d = loss(config) - loss(winner)
    p_better: float  # posterior probability that the configuration's true mean loss is below the winner's


def paired(config: dict[int, float], winner: dict[int, float]) -> Paired:
    """`config` and `winner` map seed -> val_loss of the seeds that finished ok."""
    seeds = sorted(config.keys() & winner.keys())
    diffs = [config[s] - winner[s] for s in seeds]
    interval = t_interval(diffs)
    if interval.n < MIN_SEEDS:
        return Paired(interval, math.nan)
    if interval.std == 0:  # every seed gave the same difference: no spread left to doubt it
        p = 0.5 if interval.mean == 0 else float(interval.mean < 0)
        return Paired(interval, p)
    return Paired(interval, t_cdf(-interval.mean / (interval.std / math.sqrt(interval.n)), interval.n - 1))


@dataclass(frozen=True)
class Candidate:
    """One rerun configuration of a dataset: its rank in the selection and its seeds' outcomes."""

    rank: int
    losses: dict[int, float]  # seed -> val_loss, ok seeds only
    n_seeds: int  # seeds run, ok or not

    @property
    def n_failed(self) -> int:
        return self.n_seeds - len(self.losses)

    @property
    def name(self) -> str:
        return f"top{self.rank}"


@dataclass(frozen=True)
class Comparison:
    rank: int
    outcome: str  # one of COMPARISONS
    paired: Paired | None  # None for the winner itself and where there is no winner


@dataclass(frozen=True)
class Verdict:
    winner: int | None  # rank of the winner
    verdict: str  # one of VERDICTS
    tied_with: tuple[int, ...]  # ranks the winner cannot be told apart from
    reason: str  # the verdict in words
    comparisons: dict[int, Comparison]


def pick_winner(candidates: list[Candidate]) -> Candidate | None:
    """The lowest mean loss among configurations whose every seed finished ok (a configuration that fails on
    some seed is no safe choice, whatever its other seeds did); ties go to the better-ranked one."""
    complete = [c for c in candidates if c.n_seeds > 0 and c.n_failed == 0]
    return min(complete, key=lambda c: (statistics.fmean(c.losses.values()), c.rank), default=None)


def names(ranks) -> str:
    """top2 / top2 and top3 / top2, top3 and top4"""
    labels = [f"top{r}" for r in ranks]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def judge(candidates: list[Candidate]) -> Verdict:
    """The winner of one dataset's reruns and how sure we can be of it (the module docstring)."""
    winner = pick_winner(candidates)
    if winner is None:
        return Verdict(None, "unsettled", (), "no winner: every rerun configuration failed on some seed",
                       {c.rank: Comparison(c.rank, "no winner", None) for c in candidates})
    comparisons = {winner.rank: Comparison(winner.rank, "winner", None)}
    for c in candidates:
        if c is winner:
            continue
        p = paired(c.losses, winner.losses)
        if c.n_failed:
            outcome = "failed"
        elif p.interval.n < MIN_SEEDS:
            outcome = "too few seeds"
        elif p.interval.low > 0:
            outcome = "worse"
        else:
            outcome = "not separated"
        comparisons[c.rank] = Comparison(c.rank, outcome, p)
    others = sorted(r for r in comparisons if r != winner.rank)
    n = len(winner.losses)
    if not others:
        return Verdict(winner.rank, "unsettled", (), f"cannot be settled: only {winner.name} was rerun, nothing to "
                       "compare it with (rerun.top_k >= 2 is needed)", comparisons)
    if n < MIN_SEEDS:
        return Verdict(winner.rank, "unsettled", (), f"cannot be settled with {n} seed{'s' * (n != 1)} per "
                       f"configuration: a paired interval needs rerun.seeds >= {MIN_SEEDS}", comparisons)
    unpaired = [r for r in others if comparisons[r].outcome == "too few seeds"]
    if unpaired:  # a configuration with fewer seeds run than the winner: not a sweep's reruns, but say so
        return Verdict(winner.rank, "unsettled", (), f"cannot be settled: {names(unpaired)} ran fewer than "
                       f"{MIN_SEEDS} seeds to pair with {winner.name}'s", comparisons)
    tied = tuple(r for r in others if comparisons[r].outcome == "not separated")
    if tied:
        return Verdict(winner.rank, "tied", tied, f"tied with {names(tied)}: more seeds or a larger budget would "
                       "tell them apart", comparisons)
    failed = [r for r in others if comparisons[r].outcome == "failed"]
    beaten = [r for r in others if comparisons[r].outcome == "worse"]
    if not beaten:
        reason = f"{winner.name} is the only configuration that finished every seed ({names(failed)} failed on some)"
    else:
        reason = f"{winner.name} beats {names(beaten)} on every paired interval over {n} seeds"
        reason += f", and {names(failed)} failed on some seed" if failed else ""
    return Verdict(winner.rank, "settled", (), f"settled: {reason}", comparisons)


def separation(low: float, high: float) -> str:
    """`better`, `worse` or `not separated`: where a 95% interval of (candidate - reference) lies against zero,
    for a score where higher is better (MBPP's pass@1)."""
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "not separated"
