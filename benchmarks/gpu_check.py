"""Prove (or break) every CUDA path of metatune in one run of at most 8 minutes on one H100/H200-class GPU:

  1 throughput  nanogpt_lora on GPT-2 124M (random init; LoRA r=16, seq 1024, bf16 autocast, TF32, fused AdamW),
                torch.compile off and on, beside transformers.Trainer + peft on the same model and data
                (benchmarks/bench_trainer.py): tokens/s, MFU, peak memory, ratios
  2 oom_retry   a real CUDA out-of-memory under a 12 GiB cap (an RTX 4070 Super's memory): the retry halves the
                micro-batch, keeps the batch, ends ok with gpu_hours > 0
  3 sft_qlora   hf_sft with QLoRA (4-bit NF4) on a tiny Llama: loss falls, LoRA weights change, the adapter
                reloads with PeftModel.from_pretrained and gives the same logits
  4 mbpp        20 MBPP completions from the 4-bit base plus that adapter, scored in the sandbox
  5 sweep       a 3-trial sweep through snakemake with profiles/local-4070s: metrics.json says cuda, with peak
                memory and GPU hours

    python benchmarks/gpu_check.py [--out DIR] [--mbpp FILE] [--peak-tflops X]     # on the GPU
    python benchmarks/gpu_check.py --cpu                                             # CI: < 2 minutes

Offline: every model is built here from a config; the only data are the standard library's source (bins) and
MBPP's mbpp.jsonl (--mbpp, default $METATUNE_SHARED_DATA/mbpp/mbpp.jsonl). `--cpu` takes the same code paths
at toy sizes: plain LoRA instead of QLoRA, an unquantized base for MBPP, an injected out-of-memory (the real one
needs the CUDA allocator); what only CUDA can show is listed as `skipped: no CUDA`. Each step is timed, and
fails with its reason without stopping the others. Writes DIR/gpu_check.json and prints a table.
On a GPU machine: `pip install torch --index-url https://download.pytorch.org/whl/cu128 && pip install -e .`
first, or see benchmarks/gpu_check.sh for a machine without a registry.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]  # bench_trainer, trainer_fixtures
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import bench_trainer  # noqa: E402

from metatune import trial  # noqa: E402
from metatune.contract import TrialSpec, validate_metrics  # noqa: E402
from metatune.io import atomic_write_json, iter_jsonl, read_json  # noqa: E402
from metatune.trainers import hf_sft  # noqa: E402
from metatune.trainers import nanogpt_lora as ng  # noqa: E402
from trainer_fixtures import build_tiny_llama, text_bins  # noqa: E402

# Dense bf16 tensor-core peak, TFLOP/s, from the vendors' datasheets (GeForce cards: with fp32 accumulation,
# half their fp16-accumulate rate). Matched as a substring of the device name, longest first.
PEAK_BF16_TFLOPS = {
    "H200": 989, "GH200": 989, "H100 PCIe": 756, "H100 NVL": 835, "H100": 989, "A100": 312, "A10G": 70,
    "A10": 125, "L40S": 362, "L4": 121, "RTX 6000 Ada": 364, "RTX A6000": 155, "RTX 4090": 165,
    "RTX 4080 SUPER": 105, "RTX 4070 SUPER": 71, "RTX 4070": 58, "RTX 3090": 71,
}
OOM_CAP_GIB = 12  # the RTX 4070 Super's memory


@dataclass(frozen=True)
class Sizes:
    """What differs between the GPU run and the --cpu run; the code paths are the same."""

    gpt2: dict  # GPT2Config keyword arguments
    seq_len: int
    batch: int
    micro: int
    steps: int
    rounds: int  # throughput: best of this many rounds (the first compiled round includes the compilation)
    oom_micro: int  # the micro-batch (= batch) the OOM trial starts at
    sft_steps: int
    sft_batch: int
    sft_records: int  # validation records
    mbpp_tokens: int


GPU = Sizes(gpt2={}, seq_len=1024, batch=32, micro=16, steps=30, rounds=2, oom_micro=64,
            sft_steps=40, sft_batch=8, sft_records=32, mbpp_tokens=96)
CPU = Sizes(gpt2={"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 128, "vocab_size": 257}, seq_len=64, batch=16,
            micro=8, steps=6, rounds=1, oom_micro=16, sft_steps=6, sft_batch=4, sft_records=8,
            mbpp_tokens=24)
LORA = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "warmup_ratio": 0.1, "weight_decay": 0.0,
        "target_modules": "attn_mlp"}


class Step:
    """One step's record: its checks (ok, failed or skipped: no CUDA) and figures."""

    def __init__(self, name: str):
        self.name, self.checks, self.figures = name, [], {}

    def check(self, what: str, ok: bool, detail="") -> bool:
        self.checks.append({"check": what, "status": "ok" if ok else "failed", "detail": str(detail)})
        print(f"  [{'ok' if ok else 'FAILED'}] {what} {detail}")
        return ok

    def cuda_only(self, what: str, cuda: bool, ok: Callable[[], bool], detail: Callable[[], object] = str):
        if cuda:
            return self.check(what, ok(), detail())
        self.checks.append({"check": what, "status": "skipped: no CUDA", "detail": ""})


@dataclass
class Context:
    cuda: bool
    sizes: Sizes
    out: Path
    mbpp: Path
    peak_flops: float | None
    adapter: Path | None = None  # step 3's, for step 4
    llama: Path | None = None


def run_steps(ctx: Context, steps: dict[str, Callable]) -> dict:
    report = {}
    for name, fn in steps.items():
        print(f"\n== {name}", flush=True)
        step, start = Step(name), time.monotonic()
        try:
            fn(ctx, step)
            failed = [c["check"] for c in step.checks if c["status"] == "failed"]
            status = f"failed: {'; '.join(failed)}" if failed else "ok"
        except Exception as e:  # a broken step is a finding: record why, go on with the next
            traceback.print_exc()
            status = f"failed: {type(e).__name__}: {str(e)[:1000]}"
        finally:
            if ctx.cuda:
                torch.cuda.set_per_process_memory_fraction(1.0)
                torch.cuda.empty_cache()
        report[name] = {"status": status, "seconds": round(time.monotonic() - start, 2), "figures": step.figures,
                        "checks": step.checks}
        print(f"== {name}: {status} ({report[name]['seconds']} s)", flush=True)
    return report


# ---- assets, built once into DIR/assets ----

def code_bins(ctx: Context) -> Path:
    """nanoGPT bins (bytes tokenizer) of the standard library's source: on every machine, realistic text."""
    from metatune.sources import stdlib_code

    out = ctx.out / "assets" / "stdlib"
    if not (out / "bins" / "val.bin").exists():
        out.mkdir(parents=True, exist_ok=True)
        texts, size = [], 0
        for record in stdlib_code({}):
            texts.append(record["text"])
            size += len(record["text"])
            if size > 3_000_000:
                break
        text_bins(out, "\n\n".join(texts))
    return out / "bins"


def gpt2_base(ctx: Context) -> Path:
    """GPT-2 124M (its default config; tiny with --cpu), randomly initialised and saved."""
    from transformers import GPT2Config, GPT2LMHeadModel

    out = ctx.out / "assets" / ("gpt2-124m" if not ctx.sizes.gpt2 else "gpt2-tiny")
    if not (out / "model.safetensors").exists():
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config(**ctx.sizes.gpt2)).save_pretrained(out)
    return out


def mbpp_records(ctx: Context, lo: int, hi: int) -> list[dict]:
    """MBPP tasks lo..hi normalized as the workflow does (template mbpp): prompt, completion, tests."""
    from metatune.normalize import DatasetFormat, normalize_record

    fmt = DatasetFormat("mbpp", "instruction", "mbpp", {})
    rows = [r for r in iter_jsonl(ctx.mbpp) if lo <= r["task_id"] <= hi]
    return [normalize_record(r, fmt, f"{ctx.mbpp}: task {r['task_id']}") for r in rows]


# ---- 1 throughput ----

def flops_per_token(base: Path, seq_len: int) -> tuple[float, dict]:
    """6 FLOPs per trainable and 4 per frozen weight (no weight gradient), without the position embeddings
    (no matmul; the token embeddings count as the tied output layer), plus attention's 12 * L * d * T."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from metatune.trainers.lora import lora_config

    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = model.config
    model = get_peft_model(model, lora_config(LORA, cfg.model_type, rslora=False))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for n, p in model.named_parameters() if not p.requires_grad and "wpe" not in n)
    attention = 12 * cfg.n_layer * cfg.n_embd * seq_len
    return 6 * trainable + 4 * frozen + attention, {"n_trainable": trainable, "n_frozen": frozen,
                                                    "attention_flops": attention}


def step_throughput(ctx: Context, step: Step) -> None:
    s = ctx.sizes
    bins, base = code_bins(ctx), gpt2_base(ctx)
    hp = {**LORA, "learning_rate": 1e-3, "batch_size": s.batch}
    out = ctx.out / "throughput"
    variants = {
        "nanogpt_lora": lambda: ng_run(bins, base, hp, s, out, compile=False),
        "nanogpt_lora+compile": lambda: ng_run(bins, base, hp, s, out, compile=True),
        "transformers.Trainer": lambda: bench_trainer.baseline(bins, base, s.steps, hp, s.seq_len, s.micro, out),
    }
    rounds = {name: [] for name in variants}
    for _ in range(s.rounds):  # alternating, so a busy machine hurts every variant alike
        for name, run in variants.items():
            rounds[name].append(run())
    fpt, counts = flops_per_token(base, s.seq_len)
    formula = ("MFU = tokens/s * (6*N_trainable + 4*N_frozen + 12*n_layer*n_embd*seq_len) / peak bf16 FLOP/s = "
               f"tokens/s * {fpt:.4g} / {ctx.peak_flops or float('nan'):.4g}")
    print("  " + formula)
    figures = {"formula": formula, "flops_per_token": fpt, **counts, "peak_flops": ctx.peak_flops,
               "batch": s.batch, "micro_batch": s.micro, "seq_len": s.seq_len, "steps": s.steps, "variants": {}}
    step.figures = figures
    for name, results in rounds.items():
        best = max(results, key=lambda r: r["tokens_per_s"])
        figures["variants"][name] = {
            "tokens_per_s": round(best["tokens_per_s"], 1), "rounds": [round(r["tokens_per_s"], 1) for r in results],
            "peak_mem_mb": round(best["peak_mem_mb"], 1),
            "mfu": best["tokens_per_s"] * fpt / ctx.peak_flops if ctx.peak_flops else None,
        }
        step.check(f"{name} trained", best["tokens_per_s"] > 0, f"{best['tokens_per_s']:.0f} tokens/s")
    v = figures["variants"]
    baseline = v["transformers.Trainer"]["tokens_per_s"]
    figures["ratios"] = {f"{name} / transformers.Trainer": round(v[name]["tokens_per_s"] / baseline, 3)
                         for name in v if name != "transformers.Trainer"}
    for name in ("nanogpt_lora", "nanogpt_lora+compile"):
        r = rounds[name][-1]
        step.check(f"{name}: status ok on {r['device']}", r["status"] == "ok" and r["device"] == device(ctx),
                   r.get("error") or "")
    a, b = rounds["nanogpt_lora"][-1]["val_loss"], rounds["nanogpt_lora+compile"][-1]["val_loss"]
    step.check("the compiled model learns the same", math.isclose(a, b, rel_tol=2e-2), f"val_loss {a:.4f} vs {b:.4f}")
    step.cuda_only("TF32 matmuls on", ctx.cuda, lambda: torch.backends.cuda.matmul.allow_tf32)
    step.cuda_only("peak memory from the CUDA allocator", ctx.cuda,
                   lambda: all(x["peak_mem_mb"] > 0 for x in v.values()),
                   lambda: {k: x["peak_mem_mb"] for k, x in v.items()})


def device(ctx: Context) -> str:
    return "cuda" if ctx.cuda else "cpu"


def ng_run(bins: Path, base: Path, hp: dict, s: Sizes, out: Path, compile: bool) -> dict:
    o = bench_trainer.ours(bins, base, s.steps, hp, s.seq_len, s.micro, compile=compile, out=out)
    return asdict(o)


# ---- 2 oom_retry ----

def step_oom(ctx: Context, step: Step) -> None:
    s = ctx.sizes
    bins, base = code_bins(ctx), gpt2_base(ctx)
    hp = {**LORA, "learning_rate": 1e-3, "batch_size": s.oom_micro}
    spec = TrialSpec(
        run_id="oom", stage="stage1", dataset="stdlib", seed=0, hp=hp, token_budget=2 * s.oom_micro * s.seq_len,
        seq_len=s.seq_len, train_path=str(bins / "train.bin"), val_path=str(bins / "val.bin"),
        metafeatures_path="", out_dir=str(ctx.out / "oom"), trainer="nanogpt_lora",
        settings={"nanogpt": {"base_model": str(base), "micro_batch_size": s.oom_micro, "eval_interval": 10**9,
                              "eval_batches": 1}},
    )
    cfg = ng.NanoGPTSettings.from_training(spec.settings)
    tried = []
    limit = max(1, s.oom_micro // 4)  # --cpu: the stand-in device fits a quarter of the starting micro-batch

    def attempt(micro_batch: int):
        tried.append(micro_batch)
        if not ctx.cuda and micro_batch > limit:
            raise torch.OutOfMemoryError(f"injected: micro-batch {micro_batch} > {limit} (--cpu stand-in)")
        return ng.fit(spec, cfg, micro_batch)

    if ctx.cuda:  # a real out-of-memory: the allocator refuses past the cap
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, OOM_CAP_GIB * 2**30 / total))
    try:
        outcome = ng.retry_on_oom(attempt, s.oom_micro)
    finally:
        if ctx.cuda:
            torch.cuda.set_per_process_memory_fraction(1.0)
    step.figures.update({"cap_gib": OOM_CAP_GIB if ctx.cuda else None, "micro_batches_tried": tried,
                         "status": outcome.status, "gpu_hours": outcome.gpu_hours, "wall_s": outcome.wall_s,
                         "peak_mem_mb": outcome.peak_mem_mb, "error": outcome.error})
    halving = all(b == a // 2 for a, b in itertools.pairwise(tried))
    step.check("out of memory at the first micro-batch, then halved", len(tried) >= 2 and halving, tried)
    if not step.check("ends ok", outcome.status == "ok", outcome.error or ""):
        return
    n_steps = len(ng.step_sizes(spec.token_budget, hp["batch_size"], spec.seq_len))
    step.check("the batch is kept: every optimizer step, every token",
               outcome.tokens_seen == spec.token_budget and outcome.curve[-1]["step"] == n_steps,
               f"{outcome.tokens_seen} tokens in {outcome.curve[-1]['step']} steps")
    validate_metrics(trial.metrics_record(spec, outcome))
    # The same trial at half the micro-batch it ended with: the same batch, so (nearly) the same model.
    direct = ng.fit(replace(spec, out_dir=str(ctx.out / "oom_direct")), cfg, max(1, tried[-1] // 2))
    tol = 2e-2 if ctx.cuda else 1e-4  # bf16 sums in another order
    step.check("same val_loss as a direct run at half that micro-batch",
               math.isclose(outcome.val_loss, direct.val_loss, rel_tol=tol),
               f"{outcome.val_loss:.5f} vs {direct.val_loss:.5f}")
    step.cuda_only("gpu_hours > 0, the failed attempts included", ctx.cuda,
                   lambda: outcome.gpu_hours * 3600 >= outcome.wall_s * 0.99 > 0, lambda: outcome.gpu_hours)
    step.cuda_only(f"peak memory under the {OOM_CAP_GIB} GiB cap", ctx.cuda,
                   lambda: 0 < outcome.peak_mem_mb <= OOM_CAP_GIB * 1024, lambda: outcome.peak_mem_mb)


# ---- 3 sft_qlora ----

def lora_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items() if "lora_" in k}


def step_sft(ctx: Context, step: Step) -> None:
    from metatune.mbpp import generate

    s = ctx.sizes
    data = ctx.out / "assets" / "mbpp_sft"
    data.mkdir(parents=True, exist_ok=True)
    train, val = mbpp_records(ctx, 601, 974), mbpp_records(ctx, 511, 600)[: s.sft_records]
    for split, records in (("train", train), ("val", val)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    llama = ctx.out / "assets" / "tiny_llama"
    if not (llama / "model.safetensors").exists():
        build_tiny_llama([r["prompt"] + r["completion"] for r in train], llama, max_positions=1024)
    ctx.llama = llama
    batch, seq_len = s.sft_batch, 256
    spec = TrialSpec(
        run_id="sft", stage="rerun", dataset="mbpp", seed=0,
        hp={**LORA, "learning_rate": 1e-2, "batch_size": batch}, token_budget=s.sft_steps * batch * seq_len,
        seq_len=seq_len, train_path=str(data / "train.jsonl"), val_path=str(data / "val.jsonl"),
        metafeatures_path="", out_dir=str(ctx.out / "sft"), trainer="hf_sft", save_adapter=True,
        settings={"sft": {"base_model": str(llama), "use_qlora": True, "max_seq_length": 512,
                          "micro_batch_size": 4, "eval_interval": 10**9, "eval_records": s.sft_records}},
    )
    cfg = hf_sft.SFTSettings.from_training(spec.settings)
    torch.manual_seed(spec.seed)  # as fit does, so these are the LoRA weights training starts from
    initial = lora_state(hf_sft.build_model(str(llama), spec.hp, cfg, quantize=ctx.cuda)[0])
    trainers = []  # the trainer fit builds, to read the trained model back from

    def keep(*args, **kwargs):
        trainers.append(make_trainer(*args, **kwargs))
        return trainers[-1]

    make_trainer, hf_sft.make_trainer = hf_sft.make_trainer, keep
    try:
        metrics = trial.run(spec)
    finally:
        hf_sft.make_trainer = make_trainer
    step.figures.update({k: metrics[k] for k in ("status", "val_loss", "tokens_seen", "wall_s", "gpu_hours",
                                                  "peak_mem_mb", "tokens_per_s", "device")})
    if not step.check("trial ok", metrics["status"] == "ok", metrics["error"] or ""):
        return
    curve = trial_curve(Path(spec.out_dir))
    step.figures["val_loss_start"] = curve[0]["val_loss"]
    step.check("val loss falls", curve[-1]["val_loss"] < curve[0]["val_loss"] - 0.05,
               f"{curve[0]['val_loss']:.3f} -> {curve[-1]['val_loss']:.3f}")
    model = trainers[-1].model.eval()
    trained = lora_state(model)
    changed = [k for k in initial if not torch.equal(initial[k], trained[k])]
    step.check("every LoRA weight changed", initial and len(changed) == len(initial),
               f"{len(changed)} of {len(initial)} tensors")
    quantized = [type(m).__name__ for m in model.modules() if "4bit" in type(m).__name__]
    step.cuda_only("the base is 4-bit (QLoRA)", ctx.cuda, lambda: bool(quantized), lambda: len(quantized))
    adapter = Path(spec.out_dir) / "adapter"
    ctx.adapter = adapter
    x = torch.tensor([list(range(1, 65))], device=model.device)
    # Reloaded as MBPP evaluation loads it: the base (4-bit on CUDA) from disk, then PeftModel.from_pretrained.
    reloaded, _ = generate.load_model(generate.GenerationSettings(model=str(llama), adapter=str(adapter),
                                                                  load_in_4bit=ctx.cuda))
    with torch.no_grad():
        before = model(input_ids=x).logits.float()
        after = reloaded(input_ids=x).logits.float()
        with reloaded.disable_adapter():
            bare = reloaded(input_ids=x).logits.float()
    scale = before.abs().max().item()
    tol = 2e-2 * scale if ctx.cuda else 1e-5 * scale  # CUDA: 4-bit weights, bf16 compute
    diff, effect = (after - before).abs().max().item(), (bare - before).abs().max().item()
    step.figures.update({"reload_max_abs_diff": diff, "adapter_max_abs_effect": effect})
    step.check("reloaded adapter gives the same logits", diff <= tol, f"max |diff| {diff:.3g}, tolerance {tol:.3g}")
    step.check("the adapter changes the logits (so the check above has teeth)", effect > 10 * tol,
               f"max |adapter effect| {effect:.3g}")


def trial_curve(out_dir: Path) -> list[dict]:
    import csv

    with open(out_dir / "curve.csv", newline="") as f:
        return [{k: float(v) if v else None for k, v in row.items()} for row in csv.DictReader(f)]


# ---- 4 mbpp ----

def step_mbpp(ctx: Context, step: Step) -> None:
    from metatune.mbpp import data, generate
    from metatune.mbpp.samples import Sample, append_sample
    from metatune.mbpp.sandbox import SandboxSettings
    from metatune.mbpp.score import score_files

    if ctx.adapter is None or not (ctx.adapter / "adapter_config.json").exists():
        raise RuntimeError("no adapter: the sft_qlora step did not save one")
    out = ctx.out / "mbpp"
    shutil.rmtree(out, ignore_errors=True)
    tasks = data.select_split(data.load_local(ctx.mbpp), "test")[:20]
    settings = generate.GenerationSettings(model=str(ctx.llama), adapter=str(ctx.adapter), prompt_format="sft",
                                           max_new_tokens=ctx.sizes.mbpp_tokens, batch_size=10,
                                           load_in_4bit=ctx.cuda)
    model, tokenizer = generate.load_model(settings)
    quantized = [m for m in model.modules() if "4bit" in type(m).__name__]
    step.cuda_only("the base is 4-bit", ctx.cuda, lambda: bool(quantized), lambda: len(quantized))
    step.check("the adapter is loaded", any("lora_" in n for n, _ in model.named_parameters()))
    start = time.monotonic()
    written = generate.generate(tasks, out / "samples.jsonl", settings, model=model, tokenizer=tokenizer)
    gen_s = time.monotonic() - start
    step.check("a completion per task", written == len(tasks) == 20, f"{written} of {len(tasks)}")
    # Positive control: the reference solutions must pass, so a 0 for the tiny model means its code, not the harness.
    with open(out / "reference.jsonl", "w", encoding="utf-8") as f:
        for p in tasks:
            append_sample(f, Sample(p.task_id, p.code, 0))
    sandbox = SandboxSettings(timeout_s=10.0, allow_weak=shutil.which("bwrap") is None)
    scored = score_files(ctx.mbpp, out / "samples.jsonl", out / "results.json", sandbox, 2, [1])
    control = score_files(ctx.mbpp, out / "reference.jsonl", out / "reference_results.json", sandbox, 2, [1])
    step.figures.update({"n_tasks": len(tasks), "generate_s": round(gen_s, 2), "isolation": scored["isolation"],
                         "pass@1": scored.get("pass@1"), "reference_pass@1": control.get("pass@1"),
                         "max_new_tokens": ctx.sizes.mbpp_tokens})
    step.check("every completion scored in the sandbox", scored["n_tasks"] == 20, scored["isolation"])
    step.check("reference solutions pass (positive control)", control["pass@1"] >= 0.9, control["pass@1"])


# ---- 5 sweep ----

SWEEP = """# written by benchmarks/gpu_check.py: a {n}-trial stage-1 sweep of nanogpt_lora on a pretrained tiny base
seed: 0
datasets:
  - name: arithmetic
    source: {{kind: builtin, generator: arithmetic, options: {{n_docs: 600, max_depth: 3}}}}
tokenizer: {{name: bytes}}
space:
  learning_rate: {{type: log_float, low: 1.0e-4, high: 1.0e-1, grid: {lrs}}}
  lora_r: {{type: int, low: 1, high: 32, log: true, grid: [8]}}
  lora_alpha: {{type: int, low: 1, high: 64, log: true, grid: [16]}}
  batch_size: {{type: int, low: 4, high: 64, log: true, grid: [16]}}
  target_modules: {{type: categorical, choices: [attn, attn_mlp], grid: [attn_mlp]}}
stage1: {{design: factorial, token_budget: {budget}, seq_len: 64}}
stage2: {{rounds: 0}}
rerun: {{top_k: 0}}
training:
  mode: nanogpt_lora
  nanogpt: {{base_model: pretrain, micro_batch_size: 16, eval_interval: 1000, eval_batches: 2}}
  pretrain: {{n_layer: 2, n_head: 2, n_embd: 64, block_size: 64, steps: 20, batch_size: 16, seq_len: 64}}
"""


def step_sweep(ctx: Context, step: Step) -> None:
    lrs = [1e-3, 3e-3, 1e-2] if ctx.cuda else [1e-3, 1e-2]
    work = ctx.out / "sweep"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = work / "sweep.yaml"
    config.write_text(SWEEP.format(n=len(lrs), lrs=json.dumps(lrs), budget=16 * 64 * 8))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "snakemake", "stage1", "-s", str(ROOT / "Snakefile"), "--directory", str(work),
           "--profile", str(ROOT / "profiles" / "local-4070s"), "--configfile", str(config)]
    print("  " + " ".join(cmd))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, check=False)
    (work / "snakemake.log").write_text(proc.stdout + proc.stderr)
    if not step.check("snakemake succeeded", proc.returncode == 0, f"exit {proc.returncode}"):
        print(proc.stderr[-3000:])
    found = sorted((work / "results" / "trials" / "stage1").glob("*/*/metrics.json"))
    metrics = [validate_metrics(read_json(p)) for p in found]
    step.figures["trials"] = [{k: m[k] for k in ("run_id", "status", "device", "val_loss", "peak_mem_mb",
                                                 "gpu_hours", "tokens_per_s")} for m in metrics]
    step.check(f"{len(lrs)} trials, all ok", len(metrics) == len(lrs) and all(m["status"] == "ok" for m in metrics),
               [m["status"] for m in metrics])
    step.check(f"metrics.json says device {device(ctx)}", metrics and all(m["device"] == device(ctx) for m in metrics),
               [m["device"] for m in metrics])
    step.check("peak memory recorded", metrics and all((m["peak_mem_mb"] or 0) > 0 for m in metrics))
    step.cuda_only("GPU hours recorded", ctx.cuda, lambda: all(m["gpu_hours"] > 0 for m in metrics),
                   lambda: [m["gpu_hours"] for m in metrics])


STEPS = {"throughput": step_throughput, "oom_retry": step_oom, "sft_qlora": step_sft, "mbpp": step_mbpp,
         "sweep": step_sweep}


def peak_flops(name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return PEAK_BF16_TFLOPS[key] * 1e12
    return None


def summary(report: dict) -> str:
    lines = [f"{'step':<12} {'status':<40} {'s':>7}  figures"]
    for name, r in report["steps"].items():
        f = r["figures"]
        if name == "throughput" and "variants" in f:
            figs = "; ".join(f"{k}: {v['tokens_per_s']:.0f} tok/s, MFU {fmt_pct(v['mfu'])}, {v['peak_mem_mb']:.0f} MB"
                             for k, v in f["variants"].items())
            figs += "; " + "; ".join(f"{k} = {v:.2f}x" for k, v in f["ratios"].items())
        elif name == "oom_retry":
            figs = f"micro-batches {f.get('micro_batches_tried')}, gpu_hours {f.get('gpu_hours', 0):.2e}"
        elif name == "sft_qlora":
            figs = f"val_loss {f.get('val_loss_start', float('nan')):.3f} -> {f.get('val_loss') or float('nan'):.3f}"
        elif name == "mbpp":
            figs = f"pass@1 {f.get('pass@1')}, reference {f.get('reference_pass@1')}, {f.get('isolation')}"
        else:
            figs = ", ".join(f"{t['run_id']} {t['status']} {t['device']} {t['peak_mem_mb']} MB"
                             for t in f.get("trials", []))
        lines.append(f"{name:<12} {r['status'][:40]:<40} {r['seconds']:>7.1f}  {figs}")
    return "\n".join(lines)


def fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="no GPU: the same paths at toy sizes (CI)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "gpu_check")
    shared = Path(os.environ.get("METATUNE_SHARED_DATA", ROOT.parent / "shared" / "data"))
    parser.add_argument("--mbpp", type=Path, default=shared / "mbpp" / "mbpp.jsonl", help="MBPP's mbpp.jsonl")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak (default: by its name)")
    parser.add_argument("--steps", nargs="+", choices=list(STEPS), default=list(STEPS), help="a subset to run")
    args = parser.parse_args(argv)
    if args.cpu:  # hide a GPU, should there be one, before torch looks: the trainers pick their device themselves
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu:
        parser.error("no CUDA device: run with --cpu")
    if not args.mbpp.is_file():
        parser.error(f"--mbpp: {args.mbpp} not found (MBPP's mbpp.jsonl; see benchmarks/gpu_check.sh)")
    name = torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu"
    ctx = Context(cuda=cuda, sizes=GPU if cuda else CPU, out=args.out, mbpp=args.mbpp.resolve(),
                  peak_flops=peak_flops(name, args.peak_tflops) if cuda else None)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    report = {"device": name, "cuda": cuda, "sizes": asdict(ctx.sizes), "python": platform.python_version(),
              "versions": versions(), "steps": run_steps(ctx, {k: STEPS[k] for k in args.steps})}
    report["seconds"] = round(time.monotonic() - start, 1)
    atomic_write_json(args.out / "gpu_check.json", report)
    print(f"\n{name}, {report['seconds']} s; report: {args.out / 'gpu_check.json'}\n{summary(report)}")
    return 0 if all(r["status"] == "ok" for r in report["steps"].values()) else 1


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "peft", "trl", "bitsandbytes", "snakemake"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


if __name__ == "__main__":
    sys.exit(main())
