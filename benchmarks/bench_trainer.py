"""Tokens/s of the nanogpt_lora trainer against a plain `transformers.Trainer` + `peft` baseline: the same tiny
GPT-2-config model, the same LoRA, the same tinyshakespeare bins (bytes tokenizer), batch, micro-batch and steps.

    python benchmarks/bench_trainer.py [--steps 60] [--rounds 2]

Both sides train from the same pretrained base; the runs alternate and the best round of each counts, so a busy
machine hurts both alike. Files go to benchmarks/out/ (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from metatune import bins
from metatune.contract import TrialOutcome, TrialSpec
from metatune.tokenizers import ByteTokenizer
from metatune.trainers import nanogpt_lora as ng
from metatune.trainers.lora import lora_config
from metatune.trainers.pretrain import PretrainSettings, pretrain

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
OUT = ROOT / "benchmarks" / "out"
HP = {"learning_rate": 1e-3, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "batch_size": 16,
      "warmup_ratio": 0.1, "weight_decay": 0.0, "target_modules": "attn_mlp"}
SEQ_LEN, MICRO = 128, 8


def prepare() -> tuple[Path, Path]:
    """tinyshakespeare bins and a tiny base model pretrained on them (built once)."""
    data, base = OUT / "shakespeare", OUT / "base_model"
    if not (data / "bins" / "val.bin").exists():
        data.mkdir(parents=True, exist_ok=True)
        paragraphs = SHAKESPEARE.read_text(encoding="utf-8").split("\n\n")
        cut = int(len(paragraphs) * 0.9)
        for split, docs in (("train", paragraphs[:cut]), ("val", paragraphs[cut:])):
            (data / f"{split}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        bins.build_bins({s: data / f"{s}.jsonl" for s in ("train", "val")}, data / "bins", ByteTokenizer(),
                        bins.BinSettings())
    if not (base / "model.safetensors").exists():
        pretrain([str(data / "bins" / "train.bin")], base, PretrainSettings(steps=50))
    return data / "bins", base


def ours(bin_dir: Path, base: Path, steps: int, hp: dict = HP, seq_len: int = SEQ_LEN, micro: int = MICRO,
         compile: bool = False, out: Path = OUT) -> TrialOutcome:
    spec = TrialSpec(
        run_id="bench", stage="stage1", dataset="tinyshakespeare", seed=0, hp=hp,
        token_budget=steps * hp["batch_size"] * seq_len, seq_len=seq_len, train_path=str(bin_dir / "train.bin"),
        val_path=str(bin_dir / "val.bin"), metafeatures_path="", out_dir=str(out / "ours"), trainer="nanogpt_lora",
        # one evaluation batch at the end only: the baseline does not evaluate
        settings={"nanogpt": {"base_model": str(base), "micro_batch_size": micro, "eval_interval": 10**9,
                              "eval_batches": 1, "compile": compile}},
    )
    return ng.fit(spec, ng.NanoGPTSettings.from_training(spec.settings), micro)


class Windows(torch.utils.data.Dataset):
    """Random windows of train.bin, as nanoGPT samples them, for the Trainer's data loader."""

    def __init__(self, path: Path, n: int, seq_len: int = SEQ_LEN, seed: int = 0):
        self.path, self.seq_len = path, seq_len
        self.offsets = np.random.default_rng(seed).integers(0, ng.n_tokens(path, seq_len) - seq_len, size=n)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> dict:
        x, _ = ng.windows(self.path, self.offsets[i : i + 1], self.seq_len)
        return {"input_ids": x[0], "labels": x[0]}  # the model shifts labels itself


def baseline(bin_dir: Path, base: Path, steps: int, hp: dict = HP, seq_len: int = SEQ_LEN, micro: int = MICRO,
             out: Path = OUT) -> dict:
    """tokens/s and peak memory of the Trainer, with the precision and optimizer nanogpt_lora uses on the device
    (bf16 autocast, TF32, fused AdamW on CUDA)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    cuda = torch.cuda.is_available()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base)
    model = get_peft_model(model, lora_config(hp, model.config.model_type, rslora=False))
    args = TrainingArguments(
        output_dir=str(out / "hf_trainer"), max_steps=steps, per_device_train_batch_size=micro,
        gradient_accumulation_steps=hp["batch_size"] // micro, learning_rate=hp["learning_rate"],
        lr_scheduler_type="cosine", warmup_steps=hp["warmup_ratio"], weight_decay=0.0, max_grad_norm=1.0,
        save_strategy="no", report_to="none", use_cpu=not cuda, bf16=cuda, tf32=cuda or None,
        optim="adamw_torch_fused" if cuda else "adamw_torch", disable_tqdm=True, logging_steps=steps,
        dataloader_num_workers=0, seed=0,
    )
    trainer = Trainer(model=model, args=args,
                      train_dataset=Windows(bin_dir / "train.bin", steps * hp["batch_size"], seq_len))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.monotonic()
    trainer.train()
    tokens_per_s = steps * hp["batch_size"] * seq_len / (time.monotonic() - start)
    return {"tokens_per_s": tokens_per_s, "peak_mem_mb": ng.peak_mem_mb("cuda" if cuda else "cpu")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    bin_dir, base = prepare()
    results = {"nanogpt_lora": [], "transformers.Trainer": []}
    for _ in range(args.rounds):
        results["transformers.Trainer"].append(baseline(bin_dir, base, args.steps)["tokens_per_s"])
        results["nanogpt_lora"].append(ours(bin_dir, base, args.steps).tokens_per_s)
    best = {k: max(v) for k, v in results.items()}
    print(f"\n{args.steps} steps x {HP['batch_size']} x {SEQ_LEN} tokens, micro-batch {MICRO}, "
          f"{torch.get_num_threads()} threads, best of {args.rounds}")
    for name, rates in results.items():
        print(f"{name:>22}: {best[name]:8.0f} tokens/s   (rounds: {', '.join(f'{r:.0f}' for r in rates)})")
    print(f"{'ratio':>22}: {best['nanogpt_lora'] / best['transformers.Trainer']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
