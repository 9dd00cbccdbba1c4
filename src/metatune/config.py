"""Resolve, load and validate the workflow configuration.

`resolve` is what the workflow runs (rules/common.smk calls it, and so does `metatune check-config`): the study
files given (else the demo, config/config.yaml), merged in order, then the `--config` overrides, then the schema's
defaults and checks. A study never inherits the demo's values; sections the schema marks `x-merge: whole` (the
search space, a trainer's settings, ...) are replaced as a whole, never merged key by key.

The JSON Schema (config/schemas/config.schema.yaml) checks types, ranges and unknown keys and fills defaults;
`check_semantics` then checks what a schema cannot say (unique names, grids inside their ranges, template
variables). Every error is a ConfigError whose message starts with the dotted key at fault, and all of it runs
before Snakemake builds a single job.
"""

from __future__ import annotations

import copy
import hashlib
import math
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from metatune.io import atomic_write_text
from metatune.space import Space, SpaceError
from metatune.trainers import registry as trainers

_CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
SCHEMA_PATH = _CONFIG_DIR / "schemas" / "config.schema.yaml"
# What runs when no config file is given (`snakemake` alone).
DEMO_PATH = _CONFIG_DIR / "config.yaml"
# A study file's key naming the file it extends (read first; this file is merged over it).
EXTENDS_KEY = "extends"

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


def _holds(error: jsonschema.ValidationError, sub: jsonschema.ValidationError) -> bool:
    """Whether `sub` is `error` or one of the errors inside it (a oneOf's branches)."""
    return error is sub or any(_holds(e, sub) for e in error.context)


def _schema_errors(errors: list[jsonschema.ValidationError], shown: int = 5) -> str | None:
    """All schema errors as one message, led by a wrong value inside the config (the concrete mistake) before a
    missing or unknown top-level key."""
    if not errors:
        return None
    lead = _pick_error([e for e in errors if e.absolute_path] or errors)
    messages = [f"{_key(e.absolute_path)}: {e.message}"
                for e in [lead, *(_pick_error([e]) for e in errors if not _holds(e, lead))]]
    first, *others = dict.fromkeys(messages)
    if len(others) > shown:
        others = [*others[:shown], f"{len(others) - shown} more"]
    return f"{first} (also {'; '.join(others)})" if others else first


def _deref(schema: dict, root: dict) -> dict:
    """`schema` with its $ref resolved (keywords beside the $ref win)."""
    if "$ref" not in schema:
        return schema
    ref = schema["$ref"]
    assert ref.startswith("#/$defs/"), ref
    return {**root["$defs"][ref.removeprefix("#/$defs/")], **{k: v for k, v in schema.items() if k != "$ref"}}


def _object_schemas(instance: dict, schema: dict) -> list[dict]:
    """The schema of a mapping and the oneOf branch its `kind` selects (a dataset's source)."""
    branches = [b for b in schema.get("oneOf", [])
                if "kind" in instance and b.get("properties", {}).get("kind", {}).get("const") == instance["kind"]]
    return [schema, *branches]


def _property_schema(schemas: list[dict], name: str) -> dict | None:
    for schema in schemas:
        sub = schema.get("properties", {}).get(name)
        if isinstance(sub, dict):
            return sub
    extra = schemas[0].get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Fill `default`s of object properties in place, recursing through $ref, items and oneOf branches."""
    schema = _deref(schema, root)
    if isinstance(instance, dict):
        for node in _object_schemas(instance, schema):
            for name, sub in node.get("properties", {}).items():
                if isinstance(sub, dict) and name not in instance and "default" in sub:
                    instance[name] = copy.deepcopy(sub["default"])
        schemas = _object_schemas(instance, schema)
        for name in instance:
            sub = _property_schema(schemas, name)
            if sub is not None:
                _fill_defaults(instance[name], sub, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            _fill_defaults(item, schema["items"], root)


def _ordered(instance: Any, schema: dict, root: dict) -> Any:
    """`instance` with every mapping's keys in the schema's order, then free-form keys sorted (as written where
    the schema says `x-keep-order`: the space's parameters). A rule's params are compared as text to decide
    whether it reruns, so the same config must give the same text however its file orders the keys."""
    schema = _deref(schema, root)
    if isinstance(instance, dict):
        schemas = _object_schemas(instance, schema)
        # a oneOf branch lists its keys in reading order (kind, generator, options, then the common caps)
        known = [name for node in reversed(schemas) for name in node.get("properties", {}) if name in instance]
        free = [name for name in instance if name not in known]
        names = known + (free if schema.get("x-keep-order") else sorted(free, key=str))
        return {name: _ordered(instance[name], _property_schema(schemas, name) or {}, root) for name in names}
    if isinstance(instance, list):
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        return [_ordered(item, items, root) for item in instance]
    return instance


def _plain(value: Any) -> Any:
    """Plain dicts and lists (config files and Snakemake's --config give ordered dicts and immutable maps)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def merge(base: Any, override: Any, schema: dict | None = None, root: dict | None = None) -> Any:
    """`override` over `base`: mappings key by key (as Snakemake merges config files), anything else replaced,
    and a section the schema marks `x-merge: whole` replaced as one value."""
    root = root or schema or load_schema()
    schema = _deref(schema if schema is not None else root, root)
    if schema.get("x-merge") == "whole" or not (isinstance(base, Mapping) and isinstance(override, Mapping)):
        return _plain(override)
    merged = _plain(base)
    schemas = _object_schemas(merged, schema)
    for name, value in override.items():
        merged[name] = (merge(merged[name], value, _property_schema(schemas, name) or {}, root) if name in merged
                        else _plain(value))
    return merged


def read_study(path: str | Path, schema: dict | None = None, _chain: tuple[Path, ...] = ()) -> dict:
    """One study file as a mapping. A file with `extends: OTHER.yaml` (relative to its own folder) is merged
    over that file."""
    path = Path(path)
    if path.resolve() in _chain:
        raise ConfigError(f"{path}: extends itself ({' -> '.join(map(str, [*_chain, path.resolve()]))})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else type(raw).__name__
        raise ConfigError(f"{path}: expected a mapping of config keys, got {got}")
    parent = raw.pop(EXTENDS_KEY, None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: {EXTENDS_KEY}: expected a file name, got {parent!r}")
    base = read_study(path.parent / parent, schema, (*_chain, path.resolve()))
    return merge(base, raw, schema)


def resolve(configfiles: Sequence[str | Path] = (), overrides: Mapping | None = None,
            schema: dict | None = None) -> dict:
    """The config the workflow runs: each study file in order (none given: the demo), merged; then the
    `--config` overrides; then defaults and checks (`validate`). rules/common.smk and `metatune check-config`
    both call this, so what one prints is what the other runs."""
    schema = schema or load_schema()
    raw: dict = {}
    for path in configfiles or [DEMO_PATH]:
        raw = merge(raw, read_study(path, schema), schema)
    return validate(merge(raw, overrides or {}, schema), schema)


def dump(config: dict) -> str:
    """The resolved config as YAML: `metatune check-config --print` prints this, each run keeps a copy."""
    return yaml.safe_dump(config, sort_keys=False)


def write_resolved(config: dict, folder: str | Path = "results/configs") -> Path:
    """Keep the config a run resolved as FOLDER/<hash of its text>.yaml. The name is the content's, so a file
    already there holds these very bytes: it is left as it is, and no two configs share a file."""
    text = dump(config)
    path = Path(folder) / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if not path.exists():
        atomic_write_text(path, text)
    return path


def validate(config: dict, schema: dict | None = None) -> dict:
    """Return a validated copy of `config` with defaults filled; raise ConfigError naming the key."""
    schema = schema or load_schema()
    if not isinstance(config, dict):
        raise ConfigError(f"<config>: expected a mapping, got {type(config).__name__}")
    config = copy.deepcopy(config)
    validator = jsonschema.Draft202012Validator(schema)
    message = _schema_errors(list(validator.iter_errors(config)))
    if message is not None:
        raise ConfigError(message)
    _fill_defaults(config, schema, schema)
    # Defaults can only add valid values, but check again so a broken default in the schema shows up here.
    error = _pick_error(list(validator.iter_errors(config)))
    if error is not None:
        raise ConfigError(f"{_key(error.absolute_path)}: {error.message} (after defaults)")
    check_semantics(config)
    return _ordered(config, schema, schema)


def template_fields(template: str) -> set[str]:
    try:
        return {field.split(".")[0].split("[")[0] for _, field, _, _ in string.Formatter().parse(template)
                if field is not None}
    except ValueError as e:
        raise ConfigError(f"training.external_command: malformed template: {e}") from None


def check_semantics(config: dict) -> None:
    """Checks a JSON Schema cannot express; raises ConfigError naming the key."""
    seen: dict[str, int] = {}
    for i, ds in enumerate(config["datasets"]):
        if ds["name"] in seen:
            raise ConfigError(f"datasets[{i}].name: duplicate dataset name {ds['name']!r}"
                              f" (also datasets[{seen[ds['name']]}])")
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
        n_stage1 = (s1["size"] if s1["design"] != "factorial"
                    else math.prod(len(p["grid"]) for p in config["space"].values()))
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
    """One study file, resolved as the workflow resolves it (`snakemake --configfile PATH`)."""
    return resolve([path])
