"""Load and validate the workflow configuration.

The JSON Schema (config/schemas/config.schema.yaml) checks types, ranges and unknown keys and fills defaults;
`check_semantics` then checks what a schema cannot say (unique names, grids inside their ranges, template
variables). Every error is a ConfigError whose message starts with the dotted key at fault, and all of it runs
before Snakemake builds a single job.
"""

from __future__ import annotations

import copy
import math
import string
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from metatune.space import Space, SpaceError
from metatune.trainers import registry as trainers

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schemas" / "config.schema.yaml"

# The variables an external trainer's command template may use (DESIGN.md, "External trainer").
EXTERNAL_TEMPLATE_VARS = frozenset(
    "run_id dataset_id train_path val_path token_budget seq_len hp_json metrics_path curve_path".split()
)


class ConfigError(ValueError):
    """A configuration error; the message names the key."""


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<config>"


def _pick_error(errors: list[jsonschema.ValidationError]) -> jsonschema.ValidationError | None:
    """The most useful error: plain errors before oneOf ones; inside a oneOf, the branch whose discriminator
    (the `kind` or `type` const/enum) matched, so a source with kind: local says which local key is wrong."""
    if not errors:
        return None
    plain = [e for e in errors if e.validator not in ("oneOf", "anyOf")]
    error = max(plain or errors, key=jsonschema.exceptions.relevance)
    if error.validator in ("oneOf", "anyOf") and error.context:
        failed_discriminator = {
            e.schema_path[0]
            for e in error.context
            if e.validator in ("const", "enum") and list(e.path) in (["kind"], ["type"])
        }
        branch = [e for e in error.context if e.schema_path[0] not in failed_discriminator]
        return _pick_error(branch or list(error.context))
    return error


def _fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Fill `default`s of object properties in place, recursing through $ref, items and oneOf branches."""
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/"), ref
        target = root["$defs"][ref.removeprefix("#/$defs/")]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    if isinstance(instance, dict):
        for name, sub in schema.get("properties", {}).items():
            if not isinstance(sub, dict):
                continue
            if name not in instance and "default" in sub:
                instance[name] = copy.deepcopy(sub["default"])
            if name in instance:
                _fill_defaults(instance[name], sub, root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in instance:
                if name not in schema.get("properties", {}):
                    _fill_defaults(instance[name], extra, root)
        for branch in schema.get("oneOf", []):
            kind = branch.get("properties", {}).get("kind", {}).get("const")
            if kind is not None and instance.get("kind") == kind:
                _fill_defaults(instance, branch, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            _fill_defaults(item, schema["items"], root)


def validate(config: dict, schema: dict | None = None) -> dict:
    """Return a validated copy of `config` with defaults filled; raise ConfigError naming the key."""
    schema = schema or load_schema()
    if not isinstance(config, dict):
        raise ConfigError(f"<config>: expected a mapping, got {type(config).__name__}")
    config = copy.deepcopy(config)
    validator = jsonschema.Draft202012Validator(schema)
    error = _pick_error(list(validator.iter_errors(config)))
    if error is not None:
        raise ConfigError(f"{_key(error.absolute_path)}: {error.message}")
    _fill_defaults(config, schema, schema)
    # Defaults can only add valid values, but check again so a broken default in the schema shows up here.
    error = _pick_error(list(validator.iter_errors(config)))
    if error is not None:
        raise ConfigError(f"{_key(error.absolute_path)}: {error.message} (after defaults)")
    check_semantics(config)
    return config


def template_fields(template: str) -> set[str]:
    try:
        return {field.split(".")[0].split("[")[0] for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as e:
        raise ConfigError(f"training.external_command: malformed template: {e}") from None


def check_semantics(config: dict) -> None:
    """Checks a JSON Schema cannot express; raises ConfigError naming the key."""
    seen: dict[str, int] = {}
    for i, ds in enumerate(config["datasets"]):
        if ds["name"] in seen:
            raise ConfigError(f"datasets[{i}].name: duplicate dataset name {ds['name']!r} (also datasets[{seen[ds['name']]}])")
        seen[ds["name"]] = i
        if ds["format"] == "text" and ds["template"] != "plain":
            raise ConfigError(f"datasets[{i}].template: {ds['template']!r} needs format: instruction")
        split = ds.get("split") or config["split"]
        total = split["train"] + split["val"] + split["test"]
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"datasets[{i}].split: train + val + test must be 1, got {total:g}")
    total = sum(config["split"][k] for k in ("train", "val", "test"))
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"split: train + val + test must be 1, got {total:g}")

    try:
        Space.parse(config["space"])
        trainers.check_space(config["training"]["mode"], config["space"])
    except SpaceError as e:
        raise ConfigError(str(e)) from None

    s1 = config["stage1"]
    if s1["design"] != "factorial":
        if s1["size"] is None:
            raise ConfigError(f"stage1.size: design {s1['design']!r} needs a size")
        n_grid = math.prod(len(p["grid"]) for p in config["space"].values())
        if s1["size"] > n_grid:
            raise ConfigError(f"stage1.size: {s1['size']} is more than the {n_grid} points of the full grid")
    if config["rerun"]["top_k"] > 0 and config["stage2"]["rounds"] == 0:
        n_stage1 = s1["size"] if s1["design"] != "factorial" else math.prod(len(p["grid"]) for p in config["space"].values())
        if config["rerun"]["top_k"] > n_stage1:
            raise ConfigError(f"rerun.top_k: {config['rerun']['top_k']} is more than the {n_stage1} stage-1 trials")

    training = config["training"]
    check_fidelity(config)
    if training["mode"] == "nanogpt_lora" and training["nanogpt"]["base_model"] == "pretrain":
        pre = training["pretrain"]
        if pre["n_embd"] % pre["n_head"]:
            raise ConfigError(f"training.pretrain.n_head: {pre['n_head']} does not divide n_embd ({pre['n_embd']})")
        lengths = {"stage1.seq_len": s1["seq_len"], "stage2.seq_len": config["stage2"]["seq_len"],
                   "training.pretrain.seq_len": pre["seq_len"]}
        for key, value in lengths.items():
            if value is not None and value > pre["block_size"]:
                raise ConfigError(f"{key}: {value} is longer than the pretrained model's context "
                                  f"(training.pretrain.block_size: {pre['block_size']})")
    if training["mode"] == "hf_sft":
        for i, ds in enumerate(config["datasets"]):
            if ds["format"] != "instruction":
                raise ConfigError(f"datasets[{i}].format: hf_sft trains on prompt/completion records; "
                                  f"{ds['name']!r} has format {ds['format']!r} (use nanogpt_lora for text)")
    check_mbpp(config)
    if training["mode"] == "external":
        command = training["external_command"]
        if not command:
            raise ConfigError("training.external_command: required when training.mode is external")
        unknown = template_fields(command) - EXTERNAL_TEMPLATE_VARS
        if unknown:
            raise ConfigError(
                f"training.external_command: unknown template variable(s) {sorted(unknown)}; "
                f"allowed: {sorted(EXTERNAL_TEMPLATE_VARS)}"
            )


# Trainers that can stop at a rung and resume from their checkpoint (metatune.fidelity).
RESUMABLE_TRAINERS = ("simulated", "nanogpt_lora")


def check_fidelity(config: dict) -> None:
    from metatune.fidelity import FidelitySettings, rung_schedule

    if config["fidelity"] is None:
        return
    try:
        settings = FidelitySettings.from_config(config["fidelity"])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    s1 = config["stage1"]
    n_grid = math.prod(len(p["grid"]) for p in config["space"].values())
    n_stage1 = s1["size"] if s1["design"] != "factorial" else n_grid
    n_full = rung_schedule(n_stage1, s1["token_budget"], settings)[-1].n_trials
    if config["stage2"]["rounds"] == 0 and config["rerun"]["top_k"] > n_full:
        raise ConfigError(f"rerun.top_k: {config['rerun']['top_k']} is more than the {n_full} stage-1 trials that "
                          f"reach the full budget with fidelity.eta {settings.eta}")
    if config["training"]["mode"] not in RESUMABLE_TRAINERS:
        raise ConfigError(f"fidelity: training.mode {config['training']['mode']!r} cannot resume a trial from a rung's "
                          f"checkpoint (rungs work with {' and '.join(RESUMABLE_TRAINERS)})")


def mbpp_model(config: dict) -> str | None:
    """The base model MBPP evaluates: mbpp.model, else the one the adapters were trained on."""
    if config["mbpp"]["model"]:
        return config["mbpp"]["model"]
    trainer = trainers.get(config["training"]["mode"])
    return config["training"][trainer.section]["base_model"] if trainer.saves_adapter else None


def check_mbpp(config: dict) -> None:
    marked = [i for i, ds in enumerate(config["datasets"]) if ds["mbpp"]]
    if not marked:
        return
    key = f"datasets[{marked[0]}].mbpp"
    mode = config["training"]["mode"]
    if not trainers.get(mode).saves_adapter:
        adapters = [t.name for t in trainers.TRAINERS.values() if t.saves_adapter]
        raise ConfigError(f"{key}: MBPP evaluates the reruns' adapters, and training.mode {mode!r} trains none "
                          f"(use {' or '.join(adapters)})")
    if config["rerun"]["top_k"] < 1 or not config["rerun"]["save_adapter"]:
        raise ConfigError(f"{key}: needs rerun.top_k >= 1 and rerun.save_adapter: true (the adapters to evaluate)")
    if mbpp_model(config) == "pretrain":
        raise ConfigError(f"{key}: the pretrained demo model has no Hugging Face tokenizer to generate code with; "
                          f"set training.nanogpt.base_model to a hub model (e.g. gpt2)")
    if config["mbpp"]["n_samples"] > 1 and config["mbpp"]["temperature"] == 0:
        raise ConfigError("mbpp.temperature: several samples per task need a temperature above 0")
    if max(config["mbpp"]["k"]) > config["mbpp"]["n_samples"]:
        raise ConfigError(f"mbpp.k: pass@{max(config['mbpp']['k'])} needs at least that many samples (mbpp.n_samples)")


def load(path: str | Path) -> dict:
    """Read a YAML config file and validate it."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return validate(raw or {})
