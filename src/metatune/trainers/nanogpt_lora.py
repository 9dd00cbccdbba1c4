"""LoRA fine-tuning of a Hugging Face causal LM on nanoGPT bins, in nanoGPT's style: random windows of the
memmapped train.bin, AdamW on the adapter's parameters, linear warmup then cosine decay, gradient accumulation
to the trial's batch size, and evaluation on fixed windows of val.bin.

One optimizer step sees `batch_size` sequences of `seq_len` tokens; the trial runs until it has seen
`token_budget` tokens, rounded down to whole sequences: `token_budget // (batch_size * seq_len)` full steps and,
if sequences remain, one last step with just those (see `step_sizes`).
"""

from __future__ import annotations

import gc
import hashlib
import io
import math
import resource
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from metatune.contract import TrialOutcome, TrialSpec
from metatune.io import atomic_write_bytes, read_json
from metatune.trainers import registry
from metatune.trainers.lora import lora_config


@dataclass(frozen=True)
class NanoGPTSettings:
    """The `training.nanogpt` config section (config/schemas/config.schema.yaml documents each key)."""

    base_model: str = "gpt2"
    micro_batch_size: int = 8
    eval_interval: int = 50
    eval_batches: int = 4
    grad_clip: float = 1.0
    min_lr_ratio: float = 0.1
    diverge_factor: float = 3.0
    rslora: bool = False
    compile: bool = False
    device: str = "auto"

    @classmethod
    def from_training(cls, training: dict) -> NanoGPTSettings:
        section = training.get("nanogpt", {})
        return cls(**{f.name: section[f.name] for f in fields(cls) if f.name in section})


def step_sizes(token_budget: int, batch_size: int, seq_len: int) -> list[int]:
    """Sequences per optimizer step: full batches, then one smaller step for the sequences left over."""
    n_seqs = token_budget // seq_len
    if n_seqs == 0:
        raise ValueError(f"token_budget ({token_budget}) is smaller than one sequence of seq_len {seq_len}")
    full, rest = divmod(n_seqs, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def lr_at(step: int, n_steps: int, lr: float, warmup_ratio: float, min_lr_ratio: float) -> float:
    """nanoGPT's schedule: linear warmup, then cosine decay to min_lr_ratio * lr at the last step."""
    warmup = round(warmup_ratio * n_steps)
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, n_steps - 1 - warmup)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def bin_dtype(bin_path: str | Path) -> np.dtype:
    """The token dtype, from the meta.json that metatune.bins writes beside the bins."""
    return np.dtype(read_json(Path(bin_path).parent / "meta.json")["dtype"])


def windows(bin_path: str | Path, offsets: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets at the given offsets. A fresh memmap per batch, as nanoGPT (a long-lived
    one grows the process's memory)."""
    data = np.memmap(bin_path, dtype=bin_dtype(bin_path), mode="r")
    win = torch.from_numpy(data[offsets[:, None] + np.arange(seq_len + 1)].astype(np.int64))
    return win[:, :-1], win[:, 1:]


def n_tokens(bin_path: str | Path, seq_len: int) -> int:
    n = np.memmap(bin_path, dtype=bin_dtype(bin_path), mode="r").size
    if n <= seq_len:
        raise ValueError(f"{bin_path}: {n} tokens, fewer than one window of seq_len {seq_len} + 1")
    return n


def eval_offsets(val_path: str | Path, dataset: str, n: int, seq_len: int) -> np.ndarray:
    """The fixed evaluation windows of a dataset: seeded by the dataset's name, so every trial of a dataset (any
    seed, any stage) is scored on the same tokens."""
    seed = int.from_bytes(hashlib.sha256(dataset.encode()).digest()[:8], "big")
    return np.random.default_rng(seed).integers(0, n_tokens(val_path, seq_len) - seq_len, size=n)


def micro_chunks(n: int, micro_batch: int) -> list[slice]:
    return [slice(i, min(n, i + micro_batch)) for i in range(0, n, micro_batch)]


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def on_cuda(device: str) -> bool:
    """cuda and cuda:N alike (training.nanogpt.device may name a card)."""
    return torch.device(device).type == "cuda"


def autocast(device: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda(device) else nullcontext()


@torch.no_grad()
def evaluate(model, val_path: str, offsets: np.ndarray, seq_len: int, micro_batch: int, device: str) -> float:
    """Mean next-token loss over the fixed windows (summed per token, so any micro-batch gives the same mean)."""
    was_training = model.training
    model.eval()
    total = 0.0
    for chunk in micro_chunks(len(offsets), micro_batch):
        x, y = windows(val_path, offsets[chunk], seq_len)
        with autocast(device):
            logits = model(input_ids=x.to(device)).logits
        total += F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten(), reduction="sum").item()
    model.train(was_training)
    return total / (len(offsets) * seq_len)


def load_lora_model(spec: TrialSpec, cfg: NanoGPTSettings, meta_vocab: int, device: str):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(cfg.base_model, dtype=torch.float32)
    if base.config.vocab_size < meta_vocab:
        raise ValueError(f"training.nanogpt.base_model: {cfg.base_model} has a vocabulary of"
                         f" {base.config.vocab_size}, but the bins of {spec.dataset} use {meta_vocab} token ids"
                         " (tokenizer.name must match the model)")
    return get_peft_model(base, lora_config(spec.hp, base.config.model_type, cfg.rslora)).to(device)


def peak_mem_mb(device: str) -> float:
    if on_cuda(device):
        return torch.cuda.max_memory_allocated(device) / 2**20
    # The kernel's high-water mark of this process (psutil only reports the current RSS); KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def steps_at(sizes: list[int], seq_len: int, tokens: int) -> int:
    """How many of the steps fit within `tokens` (at least one): where a rung at that many tokens stops."""
    ends = np.cumsum(sizes) * seq_len
    return max(1, int(np.searchsorted(ends, tokens, side="right")))


def trainable_state(model) -> dict:
    """The adapter's weights: the trainable parameters only, never the frozen base model."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(path: str | Path, model, optimizer, gen: torch.Generator, device: str, progress: dict) -> None:
    """Everything a promoted trial needs to go on exactly where it stopped: the adapter, the optimizer's moments,
    both random streams (training windows; dropout) and the loop's state (step, tokens, curve so far). The
    learning-rate schedule is a function of the step and the full budget, so the step is its position."""
    state = {"adapter": trainable_state(model), "optimizer": optimizer.state_dict(), "generator": gen.get_state(),
             "torch_rng": torch.get_rng_state(), "progress": progress}
    if on_cuda(device):
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, model, optimizer, gen: torch.Generator, device: str) -> dict:
    """Restore what `save_checkpoint` wrote into a freshly built model and optimizer; returns the loop's state."""
    state = torch.load(path, map_location=device, weights_only=True)
    missing = set(trainable_state(model)) ^ set(state["adapter"])
    if missing:
        raise ValueError(f"{path}: checkpoint does not fit this adapter (parameters {sorted(missing)[:3]} ...)")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(state["adapter"][name])
    optimizer.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"].cpu())
    torch.set_rng_state(state["torch_rng"].cpu())
    if on_cuda(device) and "cuda_rng" in state:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    return state["progress"]


def fit(spec: TrialSpec, cfg: NanoGPTSettings, micro_batch: int) -> TrialOutcome:
    """One attempt at the trial with the given micro-batch; CUDA OOM propagates (see `retry_on_oom`). With rungs
    it trains from its checkpoint (spec.resume_from) or from the start up to spec.stop_at_tokens, on the
    schedule of the whole budget, and leaves a checkpoint for the next rung."""
    start = time.monotonic()
    device = pick_device(cfg.device)
    torch.manual_seed(spec.seed)  # LoRA init and dropout
    if on_cuda(device):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    hp, T = spec.hp, spec.seq_len
    model = load_lora_model(spec, cfg, read_json(Path(spec.train_path).parent / "meta.json")["vocab_size"], device)
    forward = torch.compile(model) if cfg.compile else model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp["learning_rate"], betas=(0.9, 0.95),
                                  weight_decay=hp["weight_decay"], fused=on_cuda(device))
    sizes = step_sizes(spec.token_budget, int(hp["batch_size"]), T)
    stop = len(sizes) if spec.stop_at_tokens is None else min(len(sizes), steps_at(sizes, T, spec.stop_at_tokens))
    # Every run of the configuration evaluates at the rungs, so a trial promoted through them and one trained
    # without a stop record the same curve.
    rung_steps = {steps_at(sizes, T, t) for t in spec.rung_tokens}
    n_train = n_tokens(spec.train_path, T)
    val_offsets = eval_offsets(spec.val_path, spec.dataset, cfg.eval_batches * cfg.micro_batch_size, T)
    gen = torch.Generator().manual_seed(spec.seed)  # the training windows
    timeout = registry.timeout_s(spec.settings)

    def eval_row(step: int, tokens: int, train_loss: float | None) -> dict:
        return {"step": step, "tokens": tokens, "train_loss": train_loss,
                "val_loss": evaluate(model, spec.val_path, val_offsets, T, micro_batch, device)}

    if spec.resume_from:
        progress = load_checkpoint(spec.resume_from, model, optimizer, gen, device)
    else:
        curve = [eval_row(0, 0, None)]
        progress = {"step": 0, "tokens": 0, "curve": curve, "start_loss": curve[0]["val_loss"], "recent": []}
    first, resumed, tokens, curve = progress["step"], progress["tokens"], progress["tokens"], progress["curve"]
    start_loss, recent, status, error = progress["start_loss"], progress["recent"], "ok", None
    train_start = time.monotonic()
    model.train()
    for step in range(first, stop):
        n = sizes[step]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, len(sizes), hp["learning_rate"], hp["warmup_ratio"], cfg.min_lr_ratio)
        offsets = torch.randint(n_train - T, (n,), generator=gen).numpy()
        step_loss = 0.0
        for chunk in micro_chunks(n, micro_batch):
            x, y = windows(spec.train_path, offsets[chunk], T)
            with autocast(device):
                logits = forward(input_ids=x.to(device)).logits
            # Scaled by the chunk's share of the step, so the gradient is the step's mean whatever the micro-batch.
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten()) * (len(offsets[chunk]) / n)
            loss.backward()
            step_loss += loss.item()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += n * T
        recent.append(step_loss)
        if not math.isfinite(step_loss) or step_loss > cfg.diverge_factor * start_loss:
            status, error = "diverged", (f"train loss {step_loss:.4g} at step {step + 1} (start {start_loss:.4g}, "
                                         f"limit {cfg.diverge_factor:g}x)")
        last = step == stop - 1 or status != "ok"
        if (step + 1) % cfg.eval_interval == 0 or step + 1 in rung_steps or last:
            curve.append(eval_row(step + 1, tokens, sum(recent) / len(recent)))
            recent = []
            if status == "ok" and not math.isfinite(curve[-1]["val_loss"]):
                status, error = "diverged", f"val loss {curve[-1]['val_loss']} at step {step + 1}"
        if status == "ok" and time.monotonic() - start > timeout:
            status, error = "failed", f"timeout after {timeout:g} s at step {step + 1} of {len(sizes)}"
        if status != "ok":
            break
    train_s = max(time.monotonic() - train_start, 1e-9)
    if spec.checkpoint_path and status == "ok":
        save_checkpoint(spec.checkpoint_path, model, optimizer, gen, device,
                        {"step": stop, "tokens": tokens, "curve": curve, "start_loss": start_loss, "recent": recent})
    if spec.save_adapter and status == "ok":
        model.save_pretrained(Path(spec.out_dir) / "adapter")
    val_losses = [r["val_loss"] for r in curve[1:] if math.isfinite(r["val_loss"])]
    wall_s = time.monotonic() - start
    trained_here = tokens - resumed
    print(f"{spec.run_id}: {status}, steps {first}..{stop} of {len(sizes)}, micro-batch {micro_batch}, "
          f"{trained_here / train_s:.0f} tokens/s on {device} ({torch.get_num_threads()} threads)")
    import peft
    import transformers

    return TrialOutcome(
        status=status, val_loss=curve[-1]["val_loss"] if status == "ok" else None,
        best_val_loss=min(val_losses) if val_losses else None, train_loss=curve[-1]["train_loss"],
        tokens_seen=tokens, tokens_resumed=resumed, wall_s=round(wall_s, 3),
        gpu_hours=wall_s / 3600 if on_cuda(device) else 0.0,
        peak_mem_mb=round(peak_mem_mb(device), 1), tokens_per_s=round(trained_here / train_s, 1), device=device,
        error=error, curve=curve,
        versions={"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    )


def retry_on_oom(attempt: Callable[[int], TrialOutcome], micro_batch: int) -> TrialOutcome:
    """Run `attempt(micro_batch)`; on CUDA out-of-memory, start again with half the micro-batch (and so twice the
    accumulation: the step's batch stays the trial's) down to 1, then record the trial as `oom`. The time of the
    failed attempts counts in the trial's wall_s and gpu_hours: the device was busy then too."""
    start = time.monotonic()
    while True:
        try:
            outcome = attempt(micro_batch)
            break
        except torch.OutOfMemoryError as e:
            reason = str(e)[:500]
        # Out of the except block: the traceback held the failed attempt's frames, so its model, optimizer and
        # activations are only now unreachable; collect them and hand the cached blocks back to the driver.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if micro_batch == 1:
            outcome = TrialOutcome(status="oom", error=f"out of memory at micro-batch 1: {reason}",
                                   device="cuda" if torch.cuda.is_available() else "cpu")
            break
        print(f"out of memory at micro-batch {micro_batch}; retrying with {micro_batch // 2}")
        micro_batch //= 2
    lost_s = time.monotonic() - start - outcome.wall_s
    outcome.wall_s = round(outcome.wall_s + lost_s, 3)
    if on_cuda(outcome.device):
        outcome.gpu_hours += lost_s / 3600
    return outcome


def train(spec: TrialSpec) -> TrialOutcome:
    cfg = NanoGPTSettings.from_training(spec.settings)
    return retry_on_oom(lambda micro_batch: fit(spec, cfg, micro_batch), cfg.micro_batch_size)
