"""benchmarks/gpu_check.py --cpu end to end (the CI run of the GPU check), and the out-of-memory retry it proves
on a GPU, here with the out-of-memory injected."""

from __future__ import annotations

import gc
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import time
import weakref
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metatune.contract import TrialOutcome
from metatune.trainers import nanogpt_lora as ng

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["throughput", "oom_retry", "sft_qlora", "mbpp", "sweep"]


def oom():
    return torch.OutOfMemoryError("CUDA out of memory (test stand-in)")


@pytest.fixture(scope="module")
def cpu_run(shared, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu", "--out", str(out),
                           "--mbpp", str(shared / "mbpp" / "mbpp.jsonl")],
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    print(f"gpu_check.py --cpu: {time.monotonic() - start:.0f} s")
    return json.loads((out / "gpu_check.json").read_text()), proc.stdout, out


def test_every_step_ran_or_says_why_not(cpu_run):
    report, stdout, _ = cpu_run
    assert report["cuda"] is False and sorted(report["steps"]) == sorted(STEPS)
    for name, step in report["steps"].items():
        assert step["status"] in ("ok", "skipped: no CUDA"), (name, step["status"])
        assert step["seconds"] > 0 and step["checks"], name
        for check in step["checks"]:
            assert check["status"] in ("ok", "skipped: no CUDA"), (name, check)
    skipped = {c["check"] for s in report["steps"].values() for c in s["checks"] if c["status"] != "ok"}
    assert "the base is 4-bit (QLoRA)" in skipped and "GPU hours recorded" in skipped
    assert 0 < report["seconds"] and "step" in stdout and "throughput" in stdout.split("figures")[-1]


def test_throughput_compares_three_trainers_with_the_formula(cpu_run):
    f = cpu_run[0]["steps"]["throughput"]["figures"]
    assert set(f["variants"]) == {"nanogpt_lora", "nanogpt_lora+compile", "transformers.Trainer"}
    assert all(v["tokens_per_s"] > 0 and v["peak_mem_mb"] > 0 for v in f["variants"].values())
    assert set(f["ratios"]) == {"nanogpt_lora / transformers.Trainer", "nanogpt_lora+compile / transformers.Trainer"}
    assert "6*N_trainable + 4*N_frozen" in f["formula"] and 0 < f["n_trainable"] < f["n_frozen"]
    assert f["flops_per_token"] == 6 * f["n_trainable"] + 4 * f["n_frozen"] + f["attention_flops"]


def test_oom_retry_halved_and_kept_the_batch(cpu_run):
    f = cpu_run[0]["steps"]["oom_retry"]["figures"]
    assert f["micro_batches_tried"] == [16, 8, 4] and f["status"] == "ok" and f["gpu_hours"] == 0


def test_sft_learned_and_its_adapter_reloads(cpu_run):
    report, _, out = cpu_run
    f = report["steps"]["sft_qlora"]["figures"]
    assert f["status"] == "ok" and f["device"] == "cpu" and f["val_loss"] < f["val_loss_start"]
    assert f["reload_max_abs_diff"] < 1e-4 < f["adapter_max_abs_effect"]
    assert (out / "sft" / "adapter" / "adapter_config.json").is_file()


def test_mbpp_scored_twenty_completions_and_the_control(cpu_run):
    report, _, out = cpu_run
    f = report["steps"]["mbpp"]["figures"]
    assert f["n_tasks"] == 20 and f["reference_pass@1"] >= 0.9 and 0 <= f["pass@1"] <= 1
    assert len((out / "mbpp" / "samples.jsonl").read_text().splitlines()) == 20


def test_sweep_ran_through_snakemake_on_the_cpu(cpu_run):
    trials = cpu_run[0]["steps"]["sweep"]["figures"]["trials"]
    assert len(trials) == 2 and all(t["status"] == "ok" and t["device"] == "cpu" for t in trials)
    assert all(t["peak_mem_mb"] > 0 and t["gpu_hours"] == 0 for t in trials)


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H200", 989), ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756),
    ("NVIDIA GeForce RTX 4070 SUPER", 71), ("NVIDIA GeForce RTX 4070", 58), ("NVIDIA A100-SXM4-40GB", 312),
])
def test_peak_flops_by_device_name(name, tflops):
    assert load_gpu_check().peak_flops(name, None) == tflops * 1e12


def test_peak_flops_override_and_unknown_device():
    gc_mod = load_gpu_check()
    assert gc_mod.peak_flops("NVIDIA H200", 500) == 500e12
    assert gc_mod.peak_flops("Some Future GPU", None) is None


# ---- the retry logic, with the out-of-memory injected ----

def test_the_failed_attempt_is_freed_before_the_retry():
    """A failed attempt's tensors (here in a reference cycle, as a model's hooks can be) must be gone before the
    next attempt allocates its own: with the garbage collector off, only the retry's collection frees them."""
    refs = []

    def attempt(micro_batch):
        if micro_batch == 8:
            holder = {"activations": torch.zeros(1000)}
            holder["self"] = holder
            refs.append(weakref.ref(holder["activations"]))
            raise oom()
        assert refs[0]() is None, "the failed attempt's tensors are still alive"
        return TrialOutcome(status="ok", val_loss=1.0)

    gc.disable()
    try:
        assert ng.retry_on_oom(attempt, 8).status == "ok"
    finally:
        gc.enable()


def test_failed_attempts_count_in_wall_time_and_gpu_hours():
    def attempt(micro_batch):
        time.sleep(0.2)
        if micro_batch > 2:
            raise oom()
        return TrialOutcome(status="ok", val_loss=1.0, wall_s=0.2, gpu_hours=0.2 / 3600, device="cuda")

    outcome = ng.retry_on_oom(attempt, 8)  # 8, 4 fail; 2 fits
    assert outcome.wall_s >= 0.6 and outcome.gpu_hours * 3600 == pytest.approx(outcome.wall_s, abs=0.01)

    outcome = ng.retry_on_oom(lambda mb: TrialOutcome(status="ok", val_loss=1.0, wall_s=0.1, device="cpu"), 8)
    assert outcome.gpu_hours == 0


def test_other_errors_are_not_retried():
    tried = []

    def attempt(micro_batch):
        tried.append(micro_batch)
        raise RuntimeError("a bug, not a full GPU")

    with pytest.raises(RuntimeError, match="a bug"):
        ng.retry_on_oom(attempt, 8)
    assert tried == [8]


@settings(max_examples=25, deadline=None)
@given(start=st.integers(1, 256), fits=st.integers(0, 256))
def test_retry_halves_down_to_what_fits_or_records_oom(start, fits):
    tried = []

    def attempt(micro_batch):
        tried.append(micro_batch)
        if micro_batch > fits:
            raise oom()
        return TrialOutcome(status="ok", val_loss=1.0)

    outcome = ng.retry_on_oom(attempt, start)
    assert tried[0] == start and all(b == a // 2 for a, b in itertools.pairwise(tried))
    if fits >= 1:
        assert outcome.status == "ok" and tried[-1] <= fits and (len(tried) == 1 or tried[-2] > fits)
    else:
        assert outcome.status == "oom" and tried[-1] == 1 and "micro-batch 1" in outcome.error


@pytest.mark.parametrize("device, cuda", [("cuda", True), ("cuda:1", True), ("cpu", False)])
def test_a_numbered_card_takes_the_cuda_paths(device, cuda):
    """training.nanogpt.device may be cuda:N: bf16 autocast, TF32, fused AdamW and CUDA memory and GPU hours
    must follow (they checked for the string "cuda" alone)."""
    assert ng.on_cuda(device) is cuda
    with pytest.warns(UserWarning) if cuda and not torch.cuda.is_available() else nullcontext():
        assert isinstance(ng.autocast(device), torch.autocast) is cuda
