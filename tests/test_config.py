"""Config validation: the schema and the semantic checks, with errors that name the key."""

from pathlib import Path

import pytest
import yaml

from metatune import config

ROOT = Path(__file__).resolve().parents[1]
MARKOV = {"name": "m", "source": {"kind": "builtin", "generator": "markov"}}


def with_(**overrides) -> dict:
    return {"datasets": [MARKOV], **overrides}


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml")) + sorted((ROOT / "tests" / "configs").glob("*.yaml")))
def test_shipped_configs_validate(path):
    cfg = config.load(path)
    assert cfg["datasets"]


def test_defaults_are_filled():
    cfg = config.validate(with_())
    assert cfg["split"] == {"train": 0.8, "val": 0.1, "test": 0.1, "seed": 0}
    assert cfg["datasets"][0]["format"] == "text"
    assert cfg["datasets"][0]["source"]["max_total_bytes"] is None
    assert cfg["training"]["mode"] == "simulated"
    assert cfg["space"]["learning_rate"]["type"] == "log_float"


def test_every_schema_key_has_a_description():
    schema = config.load_schema()
    undocumented = []

    def walk(node, path):
        for name, sub in node.get("properties", {}).items():
            if isinstance(sub, dict):
                if "description" not in sub and "$ref" not in sub:
                    undocumented.append(f"{path}.{name}")
                walk(sub, f"{path}.{name}")
        for i, branch in enumerate(node.get("oneOf", [])):
            walk(branch, f"{path}.oneOf[{i}]")

    walk(schema, "")
    for name, sub in schema["$defs"].items():
        walk(sub, f"$defs.{name}")
    assert not undocumented


BAD = [
    (with_(bogus=1), "<config>", "bogus"),
    ({"datasets": []}, "datasets", "non-empty"),
    ({"datasets": [{"name": "m"}]}, "datasets[0]", "source"),
    ({"datasets": [{**MARKOV, "name": "1bad"}]}, "datasets[0].name", "match"),
    ({"datasets": [MARKOV, MARKOV]}, "datasets[1].name", "duplicate"),
    ({"datasets": [{**MARKOV, "source": {"kind": "ftp"}}]}, "datasets[0].source.kind", "ftp"),
    ({"datasets": [{**MARKOV, "source": {"kind": "builtin", "generator": "nope"}}]}, "datasets[0].source.generator", "nope"),
    ({"datasets": [{**MARKOV, "source": {"kind": "local"}}]}, "datasets[0].source", "paths"),
    ({"datasets": [{**MARKOV, "source": {"kind": "hf", "path": "x", "splits": "y"}}]}, "datasets[0].source", "splits"),
    ({"datasets": [{**MARKOV, "source": {**MARKOV["source"], "max_total_bytes": 0}}]}, "datasets[0].source.max_total_bytes", "minimum"),
    ({"datasets": [{**MARKOV, "template": "alpaca"}]}, "datasets[0].template", "instruction"),
    ({"datasets": [{**MARKOV, "split": {"train": 0.5, "val": 0.1, "test": 0.1}}]}, "datasets[0].split", "must be 1"),
    (with_(split={"train": 0.9, "val": 0.0, "test": 0.1}), "split.val", "0"),
    (with_(tokenizer={"name": "sentencepiece"}), "tokenizer.name", "match"),
    (with_(stage1={"token_budget": -1}), "stage1.token_budget", "minimum"),
    (with_(stage1={"token_budget": "many"}), "stage1.token_budget", "integer"),
    (with_(stage1={"design": "sobol"}), "stage1.size", "needs a size"),
    (with_(stage1={"design": "lhs", "size": 10**6}), "stage1.size", "more than"),
    (with_(stage2={"rounds": -1}), "stage2.rounds", "minimum"),
    (with_(rerun={"top_k": 1000}, stage2={"rounds": 0}), "rerun.top_k", "more than"),
    (with_(optimizer={"method": "bayes"}), "optimizer.method", "bayes"),
    (with_(training={"mode": "magic"}), "training.mode", "magic"),
    (with_(training={"mode": "external"}), "training.external_command", "required"),
    (with_(training={"mode": "external", "external_command": "train {run_id} {gpu}"}), "training.external_command", "gpu"),
    (with_(training={"timeout_s": 0}), "training.timeout_s", "0"),
    (with_(space={}), "space", "empty"),
    (with_(space={"lr": {"type": "float", "low": 0, "high": 1}}), "space.lr", "grid"),
    (with_(space={"lr": {"type": "float", "low": 1, "high": 0, "grid": [0.5]}}), "space.lr", "below"),
    (with_(space={"lr": {"type": "log_float", "low": 0, "high": 1, "grid": [0.5]}}), "space.lr.low", "log"),
    (with_(space={"lr": {"type": "float", "low": 0, "high": 1, "grid": [2]}}), "space.lr.grid", "outside"),
    (with_(space={"lr": {"type": "float", "low": 0, "high": 1, "grid": []}}), "space.lr.grid", "non-empty"),
    (with_(space={"lr": {"type": "float", "low": 0, "high": 1, "grid": ["1e-4"]}}), "space.lr.grid", "not a number"),
    (with_(space={"r": {"type": "int", "low": 1, "high": 9, "grid": [2.5]}}), "space.r.grid", "integer"),
    (with_(space={"m": {"type": "categorical", "choices": ["a"], "grid": ["b"]}}), "space.m.grid", "not among"),
    (with_(space={"m": {"type": "categorical", "choices": ["a", "a"], "grid": ["a"]}}), "space.m.choices", "duplicate"),
    (with_(space={"m": {"type": "categorical", "choices": ["a", "b"], "grid": ["a", "a"]}}), "space.m.grid", "duplicate"),
    (with_(space={"m": {"type": "text", "grid": ["a"]}}), "space.m.type", "text"),
]


@pytest.mark.parametrize("bad,key,words", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_config_names_the_key(bad, key, words):
    with pytest.raises(config.ConfigError) as e:
        config.validate(bad)
    message = str(e.value)
    assert message.startswith(key + ":"), message
    assert words.lower() in message.lower(), message


def test_load_reports_yaml_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("datasets: [\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(p)
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "missing.yaml")


def test_check_config_cli(tmp_path, capsys):
    from metatune.cli import main

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(with_(stage1={"token_budget": -1})))
    assert main(["check-config", str(p)]) == 2
    assert "stage1.token_budget" in capsys.readouterr().err
    p.write_text(yaml.safe_dump(with_()))
    assert main(["check-config", str(p), "--print"]) == 0
    assert "learning_rate" in capsys.readouterr().out
