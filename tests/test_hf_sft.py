"""The hf_sft trainer on CodeAlpaca records (../shared/data) with a tiny random Llama and a byte-level BPE
tokenizer trained in the test: nothing comes from the hub."""

from __future__ import annotations

from dataclasses import replace

import torch

from metatune import trial
from metatune.contract import TrialSpec, validate_metrics
from metatune.trainers import hf_sft
from trainer_fixtures import sft_data, tiny_llama  # noqa: F401 - fixtures

HP = {"learning_rate": 3e-3, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "batch_size": 4,
      "warmup_ratio": 0.0, "weight_decay": 0.0, "target_modules": "attn_mlp"}


def make_spec(data, model, out_dir, **changes) -> TrialSpec:
    spec = TrialSpec(
        run_id="s1", stage="rerun", dataset="codealpaca", seed=0, hp=HP, token_budget=6 * 4 * 128, seq_len=128,
        train_path=str(data / "train.jsonl"), val_path=str(data / "val.jsonl"), metafeatures_path="",
        out_dir=str(out_dir), trainer="hf_sft", save_adapter=True,
        settings={"sft": {"base_model": str(model), "use_qlora": True, "max_seq_length": 256, "micro_batch_size": 2,
                          "gradient_checkpointing": False, "eval_interval": 3, "eval_records": 8}},
    )
    return replace(spec, **changes)


def test_sft_trains_on_completions_and_saves_the_adapter(sft_data, tiny_llama, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    metrics = trial.run(make_spec(sft_data, tiny_llama, tmp_path))
    validate_metrics(metrics)
    assert metrics["status"] == "ok" and metrics["device"] == "cpu" and metrics["trainer"] == "hf_sft"
    curve = (tmp_path / "curve.csv").read_text().splitlines()
    assert [int(row.split(",")[0]) for row in curve[1:]] == [0, 3, 6]
    start = float(curve[1].split(",")[3])
    assert metrics["val_loss"] < start, (start, metrics["val_loss"])
    assert metrics["tokens_seen"] > 0 and metrics["peak_mem_mb"] > 0
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), tmp_path / "adapter")
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_qlora_settings_train_the_lora_weights(sft_data, tiny_llama, tmp_path):
    """4-bit NF4 with double quantization, loaded by bitsandbytes on this CPU, then SFT steps: every LoRA weight
    must move. (No evaluation in between: on a CPU, bitsandbytes 0.50 repacks the 4-bit weights at an eval-mode
    forward without gradients and LoRA gets no gradients after it; hf_sft therefore quantizes on CUDA only.)"""
    import bitsandbytes as bnb

    spec = make_spec(sft_data, tiny_llama, tmp_path, token_budget=2 * 4 * 128)
    cfg = replace(hf_sft.SFTSettings.from_training(spec.settings), eval_interval=100)
    model, tokenizer = hf_sft.build_model(cfg.base_model, spec.hp, cfg, quantize=True)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    hf_sft.make_trainer(model, tokenizer, spec, cfg, cfg.micro_batch_size).train()
    after = dict(model.named_parameters())
    assert before and all(not torch.equal(before[n], after[n]) for n in before)


def test_micro_batches_keep_the_batch_exact():
    assert hf_sft.micro_and_accumulation(16, 4) == (4, 4)
    assert hf_sft.micro_and_accumulation(12, 8) == (6, 2)
    assert hf_sft.micro_and_accumulation(7, 4) == (1, 7)
    assert hf_sft.micro_and_accumulation(2, 8) == (2, 1)


def test_sft_stops_at_the_trial_timeout(sft_data, tiny_llama, tmp_path):
    """training.timeout_s bounds the whole trial (model loading included): past it training stops after the
    step in progress and the trial is recorded as failed, with the reason."""
    spec = make_spec(sft_data, tiny_llama, tmp_path, token_budget=50 * 4 * 128, save_adapter=False)
    spec = replace(spec, settings={**spec.settings, "timeout_s": 0.01})
    metrics = trial.run(spec)
    assert metrics["status"] == "failed", metrics
    assert metrics["error"].startswith("timeout after 0.01 s at step 1 of 50"), metrics["error"]
    assert metrics["val_loss"] is None and metrics["tokens_seen"] > 0
    assert not (tmp_path / "adapter").exists()
