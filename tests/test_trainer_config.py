"""The trainers' config sections: schema defaults agree with the settings dataclasses; checks name their key."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from metatune import config as mc

ROOT = Path(__file__).resolve().parents[1]


def defaults(section: str) -> dict:
    filled = mc.validate({"datasets": [{"name": "d", "source": {"kind": "builtin", "generator": "arithmetic"}}]})
    return filled["training"][section]


@pytest.mark.parametrize("section,cls", [
    ("nanogpt", "metatune.trainers.nanogpt_lora:NanoGPTSettings"),
    ("pretrain", "metatune.trainers.pretrain:PretrainSettings"),
    ("sft", "metatune.trainers.hf_sft:SFTSettings"),
])
def test_schema_defaults_match_the_settings_dataclasses(section, cls):
    from importlib import import_module

    module, name = cls.split(":")
    settings = getattr(import_module(module), name)
    schema = defaults(section)
    assert {f.name: f.default for f in fields(settings) if f.name in schema} == schema
    assert set(schema) <= {f.name for f in fields(settings)}


def test_demo_config_trains_for_real_and_presets_validate():
    demo = mc.load(ROOT / "config" / "config.yaml")
    assert demo["training"]["mode"] == "nanogpt_lora" and demo["training"]["nanogpt"]["base_model"] == "pretrain"
    assert mc.load(ROOT / "config" / "simulated.yaml")["training"]["mode"] == "simulated"


def test_sequences_longer_than_the_pretrained_context_are_rejected():
    raw = mc.yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["stage1"]["seq_len"] = 128
    with pytest.raises(mc.ConfigError, match=r"^stage1.seq_len: 128 is longer .*block_size: 64"):
        mc.validate(raw)
    raw["stage1"]["seq_len"] = 64
    raw["training"]["pretrain"]["n_head"] = 3
    with pytest.raises(mc.ConfigError, match=r"^training.pretrain.n_head"):
        mc.validate(raw)
