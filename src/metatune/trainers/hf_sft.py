"""Instruction fine-tuning with TRL's SFTTrainer: LoRA (or QLoRA on CUDA) on the prompt/completion JSONL splits
of an instruction dataset, with the loss on the completions only (TRL's prompt-completion format), prompts
rendered by metatune.formats.render_prompt as everywhere else.

Token budget: a step counts as batch_size x seq_len tokens, so `token_budget // (batch_size * seq_len)` steps
(at least 1); `tokens_seen` is TRL's count of the tokens actually trained on.

QLoRA (4-bit NF4, bf16 compute, double quantization) runs only on CUDA. On a CPU the trial says so in its log
and trains plain LoRA: bitsandbytes 0.50 repacks 4-bit weights for its CPU kernel at the first forward pass in
eval mode without gradients (an evaluation, or a check of the model before get_peft_model), and from then on
the LoRA weights get no gradients at all.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from transformers import TrainerCallback

from metatune.contract import TrialOutcome, TrialSpec
from metatune.formats import render_prompt
from metatune.io import DataError, iter_jsonl
from metatune.trainers import registry
from metatune.trainers.lora import lora_config
from metatune.trainers.nanogpt_lora import peak_mem_mb, retry_on_oom


@dataclass(frozen=True)
class SFTSettings:
    """The `training.sft` config section (config/schemas/config.schema.yaml documents each key)."""

    base_model: str = "mistralai/Mistral-7B-Instruct-v0.2"
    use_qlora: bool = True
    max_seq_length: int = 1024
    micro_batch_size: int = 1
    gradient_checkpointing: bool = True
    eval_interval: int = 50
    eval_records: int = 64
    diverge_factor: float = 3.0
    rslora: bool = False

    @classmethod
    def from_training(cls, training: dict) -> SFTSettings:
        section = training.get("sft", {})
        return cls(**{f.name: section[f.name] for f in fields(cls) if f.name in section})


def load_records(path: str, limit: int | None = None):
    """A datasets.Dataset of {"prompt", "completion"}, the prompt rendered with the SFT template."""
    from datasets import Dataset

    rows = []
    for i, record in enumerate(iter_jsonl(path), start=1):
        if "prompt" not in record or "completion" not in record:
            raise DataError(f"{path}:{i}: hf_sft needs prompt/completion records (datasets with format: instruction)")
        rows.append({"prompt": render_prompt(record["prompt"]), "completion": record["completion"]})
        if limit is not None and len(rows) == limit:
            break
    if not rows:
        raise DataError(f"{path}: no records")
    return Dataset.from_list(rows)


def micro_and_accumulation(batch_size: int, micro_batch: int) -> tuple[int, int]:
    """The largest micro-batch up to `micro_batch` that divides the batch, and the accumulation steps: the
    Trainer accumulates equal micro-batches, so this keeps the trial's batch exact."""
    micro = max(d for d in range(1, min(micro_batch, batch_size) + 1) if batch_size % d == 0)
    return micro, batch_size // micro


def build_model(base_model: str, hp: dict, cfg: SFTSettings, quantize: bool):
    """(peft model, tokenizer). No forward pass may run before get_peft_model (see the module's docstring)."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if quantize:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(base_model, quantization_config=quant, dtype=torch.bfloat16)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    else:
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
        if cfg.gradient_checkpointing:  # checkpointed blocks need an input that requires grad to backprop into LoRA
            model.enable_input_require_grads()
    return get_peft_model(model, lora_config(hp, model.config.model_type, cfg.rslora)), tokenizer


class StopOnDivergence(TrainerCallback):
    """Stops training at a non-finite train loss or one above `factor` times the first logged one."""

    def __init__(self, factor: float):
        self.factor, self.first, self.reason = factor, None, None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        self.first = loss if self.first is None else self.first
        if not math.isfinite(loss) or loss > self.factor * self.first:
            self.reason = f"train loss {loss:.4g} at step {state.global_step} (first {self.first:.4g})"
            control.should_training_stop = True


class StopOnTimeout(TrainerCallback):
    """Stops training once the trial has run `timeout_s` seconds since `start` (model loading included, as in
    the other trainers); the trial is then recorded as failed."""

    def __init__(self, start: float, timeout_s: float):
        self.start, self.timeout_s, self.reason = start, timeout_s, None

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.start > self.timeout_s:
            self.reason = f"timeout after {self.timeout_s:g} s at step {state.global_step} of {state.max_steps}"
            control.should_training_stop = True


def make_trainer(model, tokenizer, spec: TrialSpec, cfg: SFTSettings, micro_batch: int, callbacks=()):
    from trl import SFTConfig, SFTTrainer

    hp, cuda = spec.hp, torch.cuda.is_available()
    micro, accumulation = micro_and_accumulation(int(hp["batch_size"]), micro_batch)
    args = SFTConfig(
        output_dir=str(Path(spec.out_dir) / "hf_trainer"),
        max_steps=max(1, spec.token_budget // (hp["batch_size"] * spec.seq_len)),
        per_device_train_batch_size=micro, per_device_eval_batch_size=micro, gradient_accumulation_steps=accumulation,
        learning_rate=hp["learning_rate"], lr_scheduler_type="cosine",
        warmup_steps=hp["warmup_ratio"],  # a float below 1 is a share of the steps (transformers 5)
        weight_decay=hp["weight_decay"], max_grad_norm=1.0, max_length=cfg.max_seq_length,
        completion_only_loss=True, eval_strategy="steps", eval_steps=cfg.eval_interval, logging_steps=1,
        save_strategy="no", report_to="none", seed=spec.seed, data_seed=spec.seed, bf16=cuda, use_cpu=not cuda,
        gradient_checkpointing=cfg.gradient_checkpointing, disable_tqdm=True, dataloader_num_workers=0,
    )
    return SFTTrainer(model=model, args=args, processing_class=tokenizer,
                      train_dataset=load_records(spec.train_path),
                      eval_dataset=load_records(spec.val_path, cfg.eval_records), callbacks=list(callbacks))


def curve_rows(log_history: list[dict], tokens_per_step: int) -> list[dict]:
    """curve.csv rows at each evaluation, with the train loss logged last before it."""
    rows, train_loss, tokens = [], None, 0
    for entry in log_history:
        if "loss" in entry:
            train_loss, tokens = entry["loss"], entry.get("num_tokens", entry["step"] * tokens_per_step)
        if "eval_loss" in entry:
            rows.append({"step": entry["step"], "tokens": int(tokens) if entry["step"] else 0,
                         "train_loss": train_loss if entry["step"] else None, "val_loss": entry["eval_loss"]})
    return rows


def fit(spec: TrialSpec, cfg: SFTSettings, micro_batch: int) -> TrialOutcome:
    import peft
    import transformers
    import trl

    start = time.monotonic()
    cuda = torch.cuda.is_available()
    quantize = cfg.use_qlora and cuda
    if cfg.use_qlora and not cuda:
        print("use_qlora: no CUDA device, so no 4-bit quantization (bitsandbytes trains no LoRA on a CPU "
              "after an evaluation); training plain LoRA instead")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(spec.seed)
    model, tokenizer = build_model(cfg.base_model, spec.hp, cfg, quantize)
    guard, clock = StopOnDivergence(cfg.diverge_factor), StopOnTimeout(start, registry.timeout_s(spec.settings))
    trainer = make_trainer(model, tokenizer, spec, cfg, micro_batch, callbacks=[guard, clock])
    start_eval = {**trainer.evaluate(), "step": 0}  # step 0 of the curve: train() starts a new log, so kept here
    train_start = time.monotonic()
    trainer.train()
    train_s = time.monotonic() - train_start
    status, error = "ok", None
    if guard.reason or clock.reason:
        status, error = ("diverged", guard.reason) if guard.reason else ("failed", clock.reason)
    last_evaluated = any("eval_loss" in e and e["step"] == trainer.state.global_step for e in trainer.state.log_history)
    if status == "ok" and not last_evaluated:
        trainer.evaluate()  # the last step was not an evaluation step
    curve = curve_rows([start_eval, *trainer.state.log_history], spec.hp["batch_size"] * spec.seq_len)
    if status == "ok" and not math.isfinite(curve[-1]["val_loss"]):
        status, error = "diverged", f"val loss {curve[-1]['val_loss']} at step {curve[-1]['step']}"
    if spec.save_adapter and status == "ok":
        model.save_pretrained(Path(spec.out_dir) / "adapter")
    shutil.rmtree(Path(spec.out_dir) / "hf_trainer", ignore_errors=True)
    logged = [e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e]
    tokens = int(logged[-1] if logged else trainer.state.global_step * spec.hp["batch_size"] * spec.seq_len)
    wall_s = time.monotonic() - start
    device = "cuda" if cuda else "cpu"
    val_losses = [r["val_loss"] for r in curve[1:] if math.isfinite(r["val_loss"])]
    print(f"{spec.run_id}: {status}, {trainer.state.global_step} steps, {tokens / train_s:.0f} tokens/s on {device}"
          f"{' (QLoRA)' if quantize else ''}")
    return TrialOutcome(
        status=status, val_loss=curve[-1]["val_loss"] if status == "ok" else None,
        best_val_loss=min(val_losses) if val_losses else None, train_loss=curve[-1]["train_loss"],
        tokens_seen=tokens, wall_s=round(wall_s, 3), gpu_hours=wall_s / 3600 if cuda else 0.0,
        peak_mem_mb=round(peak_mem_mb(device), 1), tokens_per_s=round(tokens / train_s, 1), device=device,
        error=error, curve=curve,
        versions={"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                  "trl": trl.__version__},
    )


def train(spec: TrialSpec) -> TrialOutcome:
    cfg = SFTSettings.from_training(spec.settings)
    return retry_on_oom(lambda micro_batch: fit(spec, cfg, micro_batch), cfg.micro_batch_size)
