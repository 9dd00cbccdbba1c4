"""MBPP in the DAG: a tiny instruction-tuned sweep (hf_sft on CodeAlpaca with a tiny Llama built offline), then
the zero-shot baseline, the winning adapter's evaluation in the sandbox, and the comparison table."""

import csv
import json

import pytest
import yaml

from conftest import job_counts, run_snakemake
from metatune import config
from metatune.mbpp import sandbox
from test_report import assert_not_blank
from trainer_fixtures import sft_data, tiny_llama  # noqa: F401 - fixtures


@pytest.fixture
def mbpp_config(tmp_path, shared, tiny_llama):  # noqa: F811 - the fixture
    cfg = {
        "datasets": [{"name": "codealpaca", "format": "instruction", "template": "alpaca", "mbpp": True,
                      "source": {"kind": "local", "paths": [str(shared / "codealpaca" / "code_alpaca_2k.json")],
                                 "max_records": 80}}],
        "tokenizer": {"name": f"hf:{tiny_llama}"},
        "space": {
            "learning_rate": {"type": "log_float", "low": 1e-4, "high": 1e-2, "grid": [3e-3]},
            "lora_r": {"type": "int", "low": 2, "high": 16, "grid": [8]},
            "lora_alpha": {"type": "int", "low": 2, "high": 32, "grid": [16]},
            "lora_dropout": {"type": "float", "low": 0.0, "high": 0.1, "grid": [0.0]},
            "batch_size": {"type": "int", "low": 2, "high": 8, "grid": [4]},
            "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.1, "grid": [0.0]},
            "weight_decay": {"type": "float", "low": 0.0, "high": 0.1, "grid": [0.0]},
            "target_modules": {"type": "categorical", "choices": ["attn", "attn_mlp"], "grid": ["attn_mlp"]},
        },
        "stage1": {"design": "factorial", "token_budget": 3 * 4 * 128, "seq_len": 128},
        "stage2": {"rounds": 0},
        "rerun": {"top_k": 1, "seeds": 1},
        "training": {"mode": "hf_sft", "sft": {"base_model": str(tiny_llama), "max_seq_length": 256,
                                               "micro_batch_size": 2, "gradient_checkpointing": False,
                                               "eval_interval": 3, "eval_records": 8, "use_qlora": False}},
        "mbpp": {"problems": str(shared / "mbpp" / "mbpp.jsonl"), "limit": 3, "prompt_format": "sft",
                 "max_new_tokens": 16, "batch_size": 3},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_mbpp_stage_in_the_dag(tmp_path, mbpp_config):
    counts = job_counts(run_snakemake(tmp_path, "mbpp", "-n", "--configfile", str(mbpp_config)).stdout)
    assert counts["mbpp_baseline"] == 1 and counts["mbpp_eval"] == 1 and counts["mbpp_compare"] == 1
    run_snakemake(tmp_path, "mbpp", "results/report/mbpp.png", "--cores", "2", "--configfile", str(mbpp_config))
    baseline = json.loads((tmp_path / "results/eval/mbpp/baseline/results.json").read_text())
    adapter = json.loads((tmp_path / "results/eval/mbpp/codealpaca/results.json").read_text())
    for results in (baseline, adapter):
        assert results["n_tasks"] == 3 and results["isolation"] == sandbox.isolation(sandbox.SandboxSettings())
        assert {r["status"] for r in results["per_task"]} <= {"passed", "failed", "timeout", "syntax_error", "error"}
    used = json.loads((tmp_path / "results/eval/mbpp/codealpaca/adapter.json").read_text())
    assert used["adapter"].endswith("results/trials/rerun/codealpaca/top1-seed1/adapter")
    rows = list(csv.DictReader(open(tmp_path / "results/tables/mbpp_comparison.csv")))
    assert len(rows) == 1 and rows[0]["dataset"] == "codealpaca" and rows[0]["n_tasks"] == "3"
    assert float(rows[0]["ci95_low"]) <= float(rows[0]["diff"]) <= float(rows[0]["ci95_high"])
    assert_not_blank(tmp_path / "results/report/mbpp.png", "mbpp.png")
    generations = (tmp_path / "results/eval/mbpp/codealpaca/generations.jsonl").read_text().splitlines()
    assert sorted(json.loads(g)["task_id"] for g in generations) == [11, 12, 13]


@pytest.mark.parametrize("change,key", [
    ({"training": {"mode": "simulated"}}, "datasets[0].mbpp"),
    ({"rerun": {"top_k": 1, "save_adapter": False}}, "datasets[0].mbpp"),
    ({"mbpp": {"n_samples": 5}}, "mbpp.temperature"),
    ({"mbpp": {"k": [10]}}, "mbpp.k"),
])
def test_mbpp_config_errors(mbpp_config, change, key):
    cfg = yaml.safe_load(mbpp_config.read_text())
    for section, values in change.items():
        cfg[section] = {**cfg.get(section, {}), **values} if section != "training" else values
    with pytest.raises(config.ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        config.validate(cfg)
