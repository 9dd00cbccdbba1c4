"""The trainer registry: what each trainer reads, checked against the config (a space parameter no trainer
reads is an error naming it), the schema (the same trainers, sections and defaults) and the trials (a
hyperparameter the space leaves out trains at its one default)."""

from __future__ import annotations

import json

import pytest

from metatune import config, trial
from metatune.contract import TrialSpec
from metatune.trainers import registry

MARKOV = {"name": "m", "source": {"kind": "builtin", "generator": "markov"}}
LR = {"type": "log_float", "low": 1.0e-5, "high": 1.0e-2, "grid": [1.0e-4]}


def with_space(space: dict, **training) -> dict:
    return {"datasets": [MARKOV], "space": space, "training": training}


def test_a_typo_in_the_space_is_a_config_error_naming_the_key_and_a_close_match():
    bad = with_space({"learning_rate": LR, "lora_droput": {"type": "float", "low": 0.0, "high": 0.3, "grid": [0.1]}})
    with pytest.raises(config.ConfigError) as e:
        config.validate(bad)
    message = str(e.value)
    assert message.startswith("space.lora_droput: training.mode simulated does not read")
    assert "did you mean 'lora_dropout'?" in message
    assert all(name in message for name in registry.LORA_HYPERPARAMETERS)


@pytest.mark.parametrize("mode", ["nanogpt_lora", "hf_sft"])
def test_every_lora_trainer_checks_its_space(mode):
    with pytest.raises(config.ConfigError, match=rf"^space.learnig_rate: training.mode {mode} does not read "
                                                 r".*did you mean 'learning_rate'"):
        config.validate(with_space({"learnig_rate": LR}, mode=mode))


def test_the_external_trainer_reads_any_hyperparameter():
    cfg = config.validate(with_space({"my_knob": LR}, mode="external", external_command="train {hp_json}"))
    assert list(cfg["space"]) == ["my_knob"]


def test_zero_width_ranges_and_one_choice_categoricals_fix_a_value():
    fixed = {"learning_rate": {"type": "float", "low": 1e-3, "high": 1e-3, "grid": [1e-3]},
             "target_modules": {"type": "categorical", "choices": ["attn"], "grid": ["attn"]}}
    cfg = config.validate(with_space(fixed))
    assert cfg["space"]["learning_rate"]["low"] == cfg["space"]["learning_rate"]["high"]


def test_the_schema_knows_the_registry_trainers_sections_and_defaults():
    schema = config.load_schema()["properties"]["training"]
    assert schema["properties"]["mode"]["enum"] == list(registry.TRAINERS)
    for trainer in registry.TRAINERS.values():
        assert trainer.section is None or trainer.section in schema["properties"], trainer
    assert schema["properties"]["timeout_s"]["default"] == registry.TIMEOUT_S


def test_unknown_trainer_is_named():
    with pytest.raises(ValueError, match=r"training.mode: unknown trainer 'magic'"):
        registry.get("magic")


def simulated_trial(tmp_path, hp: dict, run_id: str) -> dict:
    mf = tmp_path / "mf.json"
    mf.write_text(json.dumps({"log10_tokens": 6.0, "token_entropy": 7.0, "compression_ratio": 0.3}))
    spec = TrialSpec(run_id=run_id, stage="stage1", dataset="d", seed=0, hp=hp, token_budget=100_000, seq_len=128,
                     train_path="", val_path="", metafeatures_path=str(mf), out_dir=str(tmp_path / run_id),
                     trainer="simulated", settings={"simulated": {"noise": 0.01}})
    return trial.run(spec)


def test_a_hyperparameter_the_space_leaves_out_trains_at_its_default(tmp_path):
    defaults = dict(registry.LORA_HYPERPARAMETERS)
    searched = {"learning_rate": 5e-4, "lora_r": 8}
    short = simulated_trial(tmp_path, searched, "short")
    full = simulated_trial(tmp_path, {**defaults, **searched}, "full")
    assert short["status"] == "ok" and short["val_loss"] == full["val_loss"]
    assert short["hp"] == {**defaults, **searched}  # metrics.json records what was trained
    changed = simulated_trial(tmp_path, {**searched, "warmup_ratio": 0.2}, "changed")
    assert changed["val_loss"] != short["val_loss"]
