"""A simulated LoRA fine-tuning run: a deterministic response surface with the shape the literature reports, so
the optimizer and the whole pipeline can be exercised at scale without a GPU.

What it reproduces, and from where:
- The best LoRA learning rate is about 10x the full-fine-tuning one, and with alpha fixed and the 1/r scaling it
  hardly moves with the rank (Thinking Machines, "LoRA Without Regret", 2025). With rsLoRA's alpha/sqrt(r)
  scaling the effective step grows with sqrt(r), so the best rate falls as the rank grows (Kalajdzievski 2023).
- The best rate moves with the dataset: lower for larger and for higher-entropy corpora.
- Rank matters only once the dataset outgrows the adapter's capacity; small datasets do as well with r=4 as with
  r=64 (LoRA Without Regret; Biderman et al. 2024, "LoRA Learns Less and Forgets Less").
- LoRA tolerates large batches worse than full fine-tuning (LoRA Without Regret); adapting the MLPs as well as
  attention is better (ibid.; Dettmers et al. 2023, QLoRA, which adapts all linear layers).
- Dropout helps small datasets a little and costs large ones a little (QLoRA's appendix).
- Above a threshold learning rate (lowered by short warmup) the run diverges: status `diverged`.
- Seed noise of about 1% of the loss, half of its variance shared by every configuration trained with the same
  seed (the same data order and initialisation); a learning curve over the token budget: the loss falls as a
  power of the tokens seen, slower when the learning rate is too low, faster at first but to a worse plateau
  when it is too high, so curves cross (the reason successive halving can stop the wrong trial; Li et al. 2018,
  Hyperband; Swersky et al. 2014, freeze-thaw). Each evaluation adds a small noise of its own.
- Rungs: a trial can stop at a rung (spec.stop_at_tokens) and resume from its checkpoint; the curve is a pure
  function of the evaluation point, so a resumed trial ends exactly as an uninterrupted one.
The numbers are illustrative, not fitted; docs/simulated_trainer.md shows the formulas.
"""

from __future__ import annotations

import hashlib
import math
import random

from metatune.contract import TrialOutcome, TrialSpec
from metatune.io import atomic_write_json, read_json

FULL_FT_LR = 5e-5  # a typical full-fine-tuning rate for GPT-2-sized models
REFERENCE_ALPHA = 32
N_CURVE_POINTS = 10


# The share of a seed's noise variance that every configuration trained with that seed has in common: the same
# seed gives the same data order and initialisation, whose luck carries over between nearby configurations.
SHARED_SEED_VARIANCE = 0.5


def _rng(key: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def _noise_rng(dataset: str, hp: dict, seed: int) -> random.Random:
    return _rng(f"{dataset}|{sorted(hp.items())}|{seed}")


def seed_noise(dataset: str, hp: dict, seed: int, rng: random.Random) -> float:
    """A standard normal draw for one trial: a part shared by every configuration of the dataset trained with
    `seed` and a part of its own (drawn from `rng`, the trial's generator)."""
    shared = _rng(f"{dataset}|seed|{seed}").gauss(0, 1)
    return math.sqrt(SHARED_SEED_VARIANCE) * shared + math.sqrt(1 - SHARED_SEED_VARIANCE) * rng.gauss(0, 1)


def optimal_lr(mf: dict) -> float:
    size = 10 ** mf.get("log10_tokens", 6.0)
    entropy = mf.get("token_entropy", 7.0)
    return 10 * FULL_FT_LR * (size / 1e6) ** -0.12 * math.exp(-0.15 * (entropy - 7.0))


def effective_lr(hp: dict, rslora: bool) -> float:
    scale = hp["lora_alpha"] / REFERENCE_ALPHA
    if rslora:  # alpha/sqrt(r) instead of alpha/r: sqrt(r) times larger updates, relative to r=16
        scale *= math.sqrt(hp["lora_r"] / 16)
    return hp["learning_rate"] * scale


def final_gap(hp: dict, mf: dict, rslora: bool) -> tuple[float, float, bool]:
    """(penalty added to the loss floor, learning speed in (0, 1], diverged?) for one configuration."""
    lr_opt = optimal_lr(mf)
    ratio = effective_lr(hp, rslora) / lr_opt
    log_tokens = mf.get("log10_tokens", 6.0)
    warmup = hp["warmup_ratio"]
    batch = hp["batch_size"]
    diverge_at = 25 * (1 + 4 * warmup) * (batch / 32) ** 0.25
    if ratio > diverge_at:
        return math.inf, 1.0, True
    penalty = 0.06 * max(0.0, math.log10(ratio)) ** 2 * 4  # too high: a noisier, worse optimum
    # Too low: slower progress along the learning curve. Too high: faster at first, then flat at the worse
    # optimum above, so curves of neighbouring rates cross (fast-then-flat against slow-but-better).
    speed = ratio ** 0.9 if ratio < 1 else min(3.0, ratio) ** 0.3
    rank = hp["lora_r"]
    penalty += 0.05 * max(0.0, log_tokens - 5.0 - math.log10(rank))  # capacity: only large datasets need rank
    if hp["target_modules"] == "attn":
        penalty += 0.02 + 0.01 * max(0.0, log_tokens - 5.0)
    penalty += 0.015 * max(0.0, math.log2(batch / 16)) ** 1.3
    dropout = hp["lora_dropout"]
    penalty += dropout * (0.1 * max(0.0, log_tokens - 6.0) - 0.15 * max(0.0, min(1.0, 6.0 - log_tokens)))
    penalty += 0.3 * (hp["weight_decay"] - 0.01) ** 2
    return penalty, speed, False


def loss_floor(mf: dict) -> float:
    """The loss a perfect fine-tune would reach: lower for predictable (low-entropy, compressible) data."""
    return 0.4 + 0.3 * mf.get("token_entropy", 7.0) * (0.5 + mf.get("compression_ratio", 0.3))


def _eval_noise(dataset: str, hp: dict, seed: int, step: int, scale: float) -> float:
    """Noise of one evaluation (finite validation windows), a pure function of the point: a resumed trial draws
    the same numbers as an uninterrupted one."""
    return 1 + scale * _noise_rng(f"{dataset}@{step}", hp, seed).gauss(0, 1)


def eval_steps(n_steps: int, batch_tokens: int, rung_tokens) -> list[int]:
    """N_CURVE_POINTS evaluations spread over the whole budget, and one at every rung's target."""
    grid = {max(1, round(n_steps * i / N_CURVE_POINTS)) for i in range(1, N_CURVE_POINTS + 1)}
    return sorted(grid | {min(n_steps, max(1, t // batch_tokens)) for t in rung_tokens})


def simulate(spec: TrialSpec, mf: dict, resumed: dict | None = None) -> TrialOutcome:
    """The trial's curve up to its stop (spec.stop_at_tokens, else the budget), continuing `resumed` (a
    checkpoint: the step reached and the curve so far) when given."""
    hp = spec.hp
    sim = spec.settings.get("simulated", {})
    rslora = sim.get("rslora", False)
    penalty, speed, diverged = final_gap(hp, mf, rslora)
    rng = _noise_rng(spec.dataset, hp, spec.seed)
    noise = 1 + sim.get("noise", 0.01) * seed_noise(spec.dataset, hp, spec.seed, rng)
    eval_noise = sim.get("noise", 0.01) / 4  # each evaluation's own, smaller than the seed's
    floor = loss_floor(mf)
    start_gap = 1.5
    # Tokens at which the curve has come half way down, for a full-speed learning rate.
    half_tokens = 2e4 * (1 + 0.1 * hp["warmup_ratio"] * 10)
    batch_tokens = hp["batch_size"] * spec.seq_len
    steps = max(1, spec.token_budget // batch_tokens)
    stop = steps if spec.stop_at_tokens is None else min(steps, max(1, spec.stop_at_tokens // batch_tokens))
    diverged_at = rng.uniform(0.2, 0.6) if diverged else None
    curve = list(resumed["curve"]) if resumed else []
    done = resumed["step"] if resumed else 0
    for step in eval_steps(steps, batch_tokens, spec.rung_tokens):
        if step <= done or step > stop:
            continue
        tokens = min(spec.token_budget, step * batch_tokens)
        gap = start_gap * (1 + tokens * speed / half_tokens) ** -0.7
        if diverged and step / steps >= diverged_at:
            loss = math.nan
        else:
            loss = (floor + (0.0 if diverged else penalty) + gap) * noise
            loss *= _eval_noise(spec.dataset, hp, spec.seed, step, eval_noise)
        train = loss * 0.97 if math.isfinite(loss) else math.nan
        curve.append({"step": step, "tokens": tokens, "train_loss": train, "val_loss": loss})
        if not math.isfinite(loss):
            break
    finite = [r["val_loss"] for r in curve if math.isfinite(r["val_loss"])]
    # A cost model, not a measurement: it keeps runs.csv byte-identical across runs and lets the report plot
    # cost against quality. Throughput falls with rank and with adapting the MLPs too.
    tokens_seen = curve[-1]["tokens"]
    tokens_resumed = resumed["tokens"] if resumed else 0
    tokens_per_s = 2.5e4 / (1 + 0.004 * hp["lora_r"]) / (1.3 if hp["target_modules"] == "attn_mlp" else 1.0)
    wall_s = (tokens_seen - tokens_resumed) / tokens_per_s
    diverged_now = not math.isfinite(curve[-1]["val_loss"])
    outcome = TrialOutcome(
        status="diverged" if diverged_now else "ok",
        best_val_loss=min(finite) if finite else None,
        tokens_seen=tokens_seen,
        tokens_resumed=tokens_resumed,
        wall_s=round(wall_s, 3),
        gpu_hours=round(wall_s / 3600, 6),
        peak_mem_mb=round(1500 + 0.02 * batch_tokens + 3 * hp["lora_r"], 1),
        device="simulated",
        curve=curve,
    )
    if diverged_now:
        outcome.error = f"loss became NaN at step {curve[-1]['step']} (learning rate too high)"
    else:
        outcome.val_loss = curve[-1]["val_loss"]
        outcome.train_loss = curve[-1]["train_loss"]
        if spec.checkpoint_path:
            atomic_write_json(spec.checkpoint_path, {"step": curve[-1]["step"], "tokens": tokens_seen, "curve": curve})
    return outcome


def train(spec: TrialSpec) -> TrialOutcome:
    return simulate(spec, read_json(spec.metafeatures_path), read_json(spec.resume_from) if spec.resume_from else None)
