"""The nanogpt_lora trainer on real data (tinyshakespeare bins) with a tiny base model pretrained in the test."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from metatune import trial
from metatune.contract import TrialSpec, validate_metrics
from metatune.trainers import nanogpt_lora as ng
from trainer_fixtures import shakespeare_bins, tiny_base  # noqa: F401 - pytest fixtures

HP = {"learning_rate": 1e-2, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "batch_size": 16,
      "warmup_ratio": 0.1, "weight_decay": 0.0, "target_modules": "attn_mlp"}


def make_spec(bins, base, out_dir, **changes) -> TrialSpec:
    spec = TrialSpec(
        run_id="t1", stage="stage1", dataset="tinyshakespeare", seed=0, hp=HP, token_budget=16 * 16 * 64,
        seq_len=64, train_path=str(bins / "train.bin"), val_path=str(bins / "val.bin"), metafeatures_path="",
        out_dir=str(out_dir), trainer="nanogpt_lora",
        settings={"nanogpt": {"base_model": str(base), "micro_batch_size": 8, "eval_interval": 8, "eval_batches": 2}},
    )
    return replace(spec, **changes)


@pytest.fixture(scope="module")
def trained(shakespeare_bins, tiny_base, tmp_path_factory):  # noqa: F811
    """One real trial through the runner, keeping its adapter: (spec, metrics.json as written)."""
    spec = make_spec(shakespeare_bins, tiny_base, tmp_path_factory.mktemp("trial"), save_adapter=True)
    trial.run(spec)
    return spec, json.loads((ng.Path(spec.out_dir) / "metrics.json").read_text())


def test_step_sizes_spend_the_budget_exactly():
    assert ng.step_sizes(10 * 64, 4, 64) == [4, 4, 2]
    assert ng.step_sizes(8 * 64 + 63, 4, 64) == [4, 4]  # a partial sequence is not trained on
    with pytest.raises(ValueError, match="token_budget"):
        ng.step_sizes(10, 4, 64)


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    lrs = [ng.lr_at(s, 100, 1.0, 0.1, 0.1) for s in range(100)]
    assert lrs[0] < lrs[5] < lrs[9] <= 1.0
    assert max(lrs) == pytest.approx(1.0, rel=0.01)
    assert lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_loss_goes_down_and_metrics_follow_the_contract(trained):
    spec, metrics = trained
    validate_metrics(metrics)
    assert metrics["status"] == "ok" and metrics["trainer"] == "nanogpt_lora" and metrics["device"] == "cpu"
    assert metrics["tokens_seen"] == spec.token_budget
    assert metrics["gpu_hours"] == 0.0 and metrics["peak_mem_mb"] > 0 and metrics["tokens_per_s"] > 0
    curve = (ng.Path(spec.out_dir) / "curve.csv").read_text().splitlines()
    assert curve[0] == "step,tokens,train_loss,val_loss" and len(curve) == 1 + 3  # steps 0, 8, 16
    start = float(curve[1].split(",")[3])
    assert metrics["val_loss"] < start - 0.1, (start, metrics["val_loss"])
    assert metrics["best_val_loss"] <= metrics["val_loss"]


def test_same_seed_same_result_on_cpu(trained, tmp_path):
    spec, metrics = trained
    again = trial.run(replace(spec, out_dir=str(tmp_path), save_adapter=False))
    assert again["val_loss"] == metrics["val_loss"]
    assert (tmp_path / "curve.csv").read_text() == (ng.Path(spec.out_dir) / "curve.csv").read_text()


def test_saved_adapter_reproduces_the_trained_model(trained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    spec, metrics = trained
    cfg = ng.NanoGPTSettings.from_training(spec.settings)
    offsets = ng.eval_offsets(spec.val_path, spec.dataset, cfg.eval_batches * cfg.micro_batch_size, spec.seq_len)
    base = AutoModelForCausalLM.from_pretrained(cfg.base_model)
    x, _ = ng.windows(spec.val_path, offsets, spec.seq_len)
    with torch.no_grad():
        base_logits = base(input_ids=x).logits
    model = PeftModel.from_pretrained(base, ng.Path(spec.out_dir) / "adapter")
    loss = ng.evaluate(model, spec.val_path, offsets, spec.seq_len, 4, "cpu")
    assert loss == pytest.approx(metrics["val_loss"], abs=1e-5)
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=x).logits, base_logits, atol=1e-3)


def test_absurd_learning_rate_diverges(shakespeare_bins, tiny_base, tmp_path):  # noqa: F811
    spec = make_spec(shakespeare_bins, tiny_base, tmp_path, hp={**HP, "learning_rate": 50.0})
    metrics = trial.run(spec)
    assert metrics["status"] == "diverged" and metrics["val_loss"] is None
    assert "train loss" in metrics["error"] and metrics["tokens_seen"] < spec.token_budget


def test_oom_halves_the_micro_batch_and_keeps_the_batch(trained, tmp_path):
    """No GPU here: the attempt is the real trainer, behind a stand-in for a GPU that runs out of memory above a
    micro-batch of 4. The retried trial must match the trial run at micro-batch 8: same effective batch."""
    spec, metrics = trained
    spec = replace(spec, out_dir=str(tmp_path), save_adapter=False)
    cfg = ng.NanoGPTSettings.from_training(spec.settings)
    tried = []

    def attempt(micro_batch):
        tried.append(micro_batch)
        if micro_batch > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (test stand-in)")
        return ng.fit(spec, cfg, micro_batch)

    outcome = ng.retry_on_oom(attempt, 16)
    assert tried == [16, 8, 4]
    assert outcome.status == "ok"
    assert outcome.val_loss == pytest.approx(metrics["val_loss"], rel=1e-4)


def test_oom_at_micro_batch_one_is_recorded(tmp_path):
    tried = []

    def attempt(micro_batch):
        tried.append(micro_batch)
        raise torch.OutOfMemoryError("CUDA out of memory (test stand-in)")

    outcome = ng.retry_on_oom(attempt, 4)
    assert tried == [4, 2, 1] and outcome.status == "oom"
    spec = TrialSpec(run_id="t", stage="stage1", dataset="d", seed=0, hp=HP, token_budget=1, seq_len=8,
                     train_path="", val_path="", metafeatures_path="", out_dir=str(tmp_path), trainer="nanogpt_lora")
    validate_metrics(trial.metrics_record(spec, outcome))


def test_fixed_eval_windows_depend_on_the_dataset_only(shakespeare_bins):  # noqa: F811
    val = shakespeare_bins / "val.bin"
    a = ng.eval_offsets(val, "tinyshakespeare", 16, 64)
    assert (a == ng.eval_offsets(val, "tinyshakespeare", 16, 64)).all()
    assert not (a == ng.eval_offsets(val, "other", 16, 64)).all()


@pytest.mark.parametrize("choice,adapted,frozen", [
    ("attn", {"attn.c_attn", "attn.c_proj"}, {"mlp.c_fc", "mlp.c_proj"}),
    ("attn_mlp", {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}, set()),
])
def test_target_modules_pick_attention_or_all(tiny_base, choice, adapted, frozen):  # noqa: F811
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from metatune.trainers.lora import lora_config

    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    model = get_peft_model(base, lora_config({**HP, "target_modules": choice}, "gpt2", rslora=True))
    names = {n.split(".h.0.", 1)[1].rsplit(".lora_A", 1)[0] for n, _ in model.named_modules()
             if ".h.0." in n and n.endswith("lora_A")}
    assert names == adapted and not names & frozen
    assert math.isclose(model.peft_config["default"].lora_alpha, HP["lora_alpha"])


# --- rungs: stop, checkpoint, resume -----------------------------------------------------------------------

RUNG_TOKENS = (3 * 16 * 64, 7 * 16 * 64, 16 * 16 * 64)  # steps 3, 7 and 16 of 16: off the eval interval (8)


def test_promoted_through_every_rung_ends_bit_identical_to_uninterrupted(shakespeare_bins, tiny_base, tmp_path):  # noqa: F811
    """The continuation property: a trial stopped at each rung and resumed from its checkpoint in a new run ends
    with the same metrics and the same curve, to the bit, as the same configuration trained without a stop
    (both evaluate at the rungs). Dropout is on, so the restored random streams are exercised too."""
    hp = {**HP, "lora_dropout": 0.1}
    whole = trial.run(make_spec(shakespeare_bins, tiny_base, tmp_path / "whole", hp=hp, rung=2,
                                rung_tokens=RUNG_TOKENS, stop_at_tokens=RUNG_TOKENS[2]))
    checkpoint = None
    for k, stop in enumerate(RUNG_TOKENS):
        out = tmp_path / f"rung{k}"
        spec = make_spec(shakespeare_bins, tiny_base, out, hp=hp, rung=k, rung_tokens=RUNG_TOKENS,
                         stop_at_tokens=stop, resume_from=checkpoint, checkpoint_path=str(out / "checkpoint.ckpt"))
        m = trial.run(spec)
        assert m["status"] == "ok" and m["tokens_trained"] == stop and m["partial"] == (k < 2)
        assert m["tokens_resumed"] == (RUNG_TOKENS[k - 1] if k else 0)
        checkpoint = spec.checkpoint_path
    for key in ("val_loss", "best_val_loss", "train_loss", "tokens_seen", "tokens_trained"):
        assert m[key] == whole[key], key
    assert (tmp_path / "rung2" / "curve.csv").read_text() == (tmp_path / "whole" / "curve.csv").read_text()
    steps = [int(line.split(",")[0]) for line in (tmp_path / "whole" / "curve.csv").read_text().splitlines()[1:]]
    assert steps == [0, 3, 7, 8, 16]


def test_checkpoint_holds_the_adapter_not_the_base_model(shakespeare_bins, tiny_base, tmp_path):  # noqa: F811
    spec = make_spec(shakespeare_bins, tiny_base, tmp_path, rung=0, rung_tokens=RUNG_TOKENS,
                     stop_at_tokens=RUNG_TOKENS[0], checkpoint_path=str(tmp_path / "checkpoint.ckpt"))
    trial.run(spec)
    state = torch.load(spec.checkpoint_path, weights_only=True)
    base_bytes = sum(f.stat().st_size for f in tiny_base.glob("*.safetensors"))
    adapter_bytes = sum(t.numel() * t.element_size() for t in state["adapter"].values())
    assert all("lora_" in name for name in state["adapter"])
    assert (tmp_path / "checkpoint.ckpt").stat().st_size < 4 * adapter_bytes + 200_000 < base_bytes
    assert state["progress"]["step"] == 3 and state["progress"]["tokens"] == RUNG_TOKENS[0]


def test_a_checkpoint_of_another_adapter_is_refused(shakespeare_bins, tiny_base, tmp_path):  # noqa: F811
    spec = make_spec(shakespeare_bins, tiny_base, tmp_path / "a", rung=0, rung_tokens=RUNG_TOKENS,
                     stop_at_tokens=RUNG_TOKENS[0], checkpoint_path=str(tmp_path / "a.ckpt"))
    trial.run(spec)
    other = make_spec(shakespeare_bins, tiny_base, tmp_path / "b", hp={**HP, "target_modules": "attn"}, rung=1,
                      rung_tokens=RUNG_TOKENS, stop_at_tokens=RUNG_TOKENS[1], resume_from=str(tmp_path / "a.ckpt"))
    m = trial.run(other)
    assert m["status"] == "failed" and "does not fit this adapter" in m["error"]
