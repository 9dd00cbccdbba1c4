"""The LoRA adapter of a trial, shared by the trainers: which modules the `target_modules` hyperparameter names in
each architecture, and the peft LoraConfig built from a trial's hyperparameters."""

from __future__ import annotations

_LLAMA_LIKE = {"attn": ["q_proj", "k_proj", "v_proj", "o_proj"], "mlp": ["gate_proj", "up_proj", "down_proj"]}

# model_type (config.json) -> module-name suffixes. GPT-2 names both projections `c_proj`, so its entries are
# qualified by the parent module (peft matches a name or a dotted suffix of it).
TARGET_MODULES = {
    "gpt2": {"attn": ["attn.c_attn", "attn.c_proj"], "mlp": ["mlp.c_fc", "mlp.c_proj"]},
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
}
# GPT-2's Conv1D stores its weight transposed (in_features, out_features).
FAN_IN_FAN_OUT = {"gpt2"}


def target_modules(model_type: str, choice: str) -> list[str]:
    """Module names for the hyperparameter value `attn` (attention only) or `attn_mlp` (attention and MLP)."""
    if model_type not in TARGET_MODULES:
        raise ValueError(f"target_modules: no module table for model type {model_type!r} "
                         f"(known: {sorted(TARGET_MODULES)}; add it to metatune.trainers.lora.TARGET_MODULES)")
    table = TARGET_MODULES[model_type]
    if choice == "attn":
        return table["attn"]
    if choice == "attn_mlp":
        return table["attn"] + table["mlp"]
    raise ValueError(f"target_modules: {choice!r} is not attn or attn_mlp")


def lora_config(hp: dict, model_type: str, rslora: bool):
    from peft import LoraConfig

    return LoraConfig(
        r=int(hp["lora_r"]), lora_alpha=hp["lora_alpha"], lora_dropout=hp["lora_dropout"],
        target_modules=target_modules(model_type, hp["target_modules"]),
        fan_in_fan_out=model_type in FAN_IN_FAN_OUT, use_rslora=rslora, bias="none", task_type="CAUSAL_LM",
    )
