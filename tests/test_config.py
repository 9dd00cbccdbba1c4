"""Config validation: the schema and the semantic checks, with errors that name the key."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import job_counts, run_snakemake
from metatune import config

ROOT = Path(__file__).resolve().parents[1]
MARKOV = {"name": "m", "source": {"kind": "builtin", "generator": "markov"}}


def with_(**overrides) -> dict:
    return {"datasets": [MARKOV], **overrides}


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml"))
                         + sorted((ROOT / "tests" / "configs").glob("*.yaml")))
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
    ({"datasets": [{**MARKOV, "source": {"kind": "builtin", "generator": "nope"}}]}, "datasets[0].source.generator",
     "nope"),
    ({"datasets": [{**MARKOV, "source": {"kind": "local"}}]}, "datasets[0].source", "paths"),
    ({"datasets": [{**MARKOV, "source": {"kind": "hf", "path": "x", "splits": "y"}}]}, "datasets[0].source", "splits"),
    ({"datasets": [{**MARKOV, "source": {**MARKOV["source"], "max_total_bytes": 0}}]},
     "datasets[0].source.max_total_bytes", "minimum"),
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
    (with_(training={"mode": "external", "external_command": "train {run_id} {gpu}"}), "training.external_command",
     "gpu"),
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
    (with_(space={"m": {"type": "categorical", "choices": ["a", "b"], "grid": ["a", "a"]}}), "space.m.grid",
     "duplicate"),
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


# --- A study stands alone: resolution, merging, and what Snakemake runs -------------------------------------------

TINY = ROOT / "tests" / "configs" / "tiny.yaml"
SMALL_SPACE = {
    "learning_rate": {"type": "log_float", "low": 1.0e-5, "high": 3.0e-2, "grid": [1.0e-4, 1.0e-3]},
    "lora_r": {"type": "int", "low": 1, "high": 64, "log": True, "grid": [4, 16]},
}


SCHEMA = config.load_schema()
TINY_RESOLVED = config.load(TINY)


def write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def check_config(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metatune.cli", "check-config", *args],
                          capture_output=True, text=True, cwd=ROOT)


def stage1_hps(dry_run_with_commands: str) -> list[dict]:
    """The hyperparameters of every stage-1 trial, from the commands `snakemake -n -p` prints."""
    return [json.loads(hp) for hp in re.findall(r"--run-id g[0-9a-f]{10} .*? --hp '([^']*)'", dry_run_with_commands)]


def test_the_demo_runs_only_when_no_file_is_given():
    assert config.resolve() == config.load(config.DEMO_PATH)
    study = config.resolve([TINY])
    assert study == config.load(TINY)
    assert [d["name"] for d in study["datasets"]] == ["arith", "markov"]
    # what tiny.yaml omits is the schema's default, never the demo's value
    assert study["training"]["nanogpt"]["base_model"] == "gpt2" != config.resolve()["training"]["nanogpt"]["base_model"]


def test_study_with_a_smaller_space_runs_exactly_its_own_grid(tmp_path):
    study = write(tmp_path / "study.yaml", {**yaml.safe_load(TINY.read_text()), "space": SMALL_SPACE})
    out = run_snakemake(tmp_path, "-n", "-p", "--configfile", str(study)).stdout
    assert job_counts(out)["trial_stage1"] == 2 * 4  # 2 datasets x the 2 x 2 grid
    hps = stage1_hps(out)
    assert len(hps) == 8 and {tuple(sorted(hp)) for hp in hps} == {("learning_rate", "lora_r")}
    assert {(hp["learning_rate"], hp["lora_r"]) for hp in hps} == {(a, b) for a in (1e-4, 1e-3) for b in (4, 16)}


def test_study_without_training_runs_the_schema_defaults(tmp_path):
    cfg = yaml.safe_load(TINY.read_text())
    del cfg["training"]
    study = write(tmp_path / "study.yaml", cfg)
    resolved = config.resolve([study])
    assert resolved["training"] == config.validate({"datasets": [MARKOV]})["training"]
    assert resolved["training"]["mode"] == "simulated" and resolved["training"]["timeout_s"] == 3600
    out = run_snakemake(tmp_path, "-n", "-p", "--configfile", str(study)).stdout
    assert "pretrain_base" not in job_counts(out)  # the demo's nanogpt_lora + pretrained base is not inherited
    assert '"trainer": "simulated"' in out


def test_whole_sections_are_replaced_and_the_rest_merges_key_by_key(tmp_path):
    base = write(tmp_path / "base.yaml", yaml.safe_load(TINY.read_text()))
    over = write(tmp_path / "over.yaml", {
        "space": SMALL_SPACE, "stage1": {"token_budget": 777},
        "training": {"nanogpt": {"micro_batch_size": 2}}, "tokenizer": {"name": "gpt2"},
    })
    cfg = config.resolve([base, over])
    assert list(cfg["space"]) == ["learning_rate", "lora_r"]  # replaced, not merged with tiny's five
    assert cfg["space"]["lora_r"]["grid"] == [4, 16]
    assert cfg["stage1"] == {"design": "factorial", "size": None, "token_budget": 777, "seq_len": 64}
    assert cfg["training"]["mode"] == "simulated"  # training merges key by key ...
    assert cfg["training"]["nanogpt"]["micro_batch_size"] == 2 and cfg["training"]["nanogpt"]["eval_interval"] == 50
    assert cfg["tokenizer"] == {"name": "gpt2", "bpe_file": None}
    # ... a trainer's section does not: what the later file omits there is the default, not the earlier value
    first = write(tmp_path / "first.yaml",
                  {"datasets": [MARKOV], "training": {"nanogpt": {"base_model": "pretrain", "eval_interval": 3}}})
    second = write(tmp_path / "second.yaml", {"training": {"nanogpt": {"eval_interval": 5}}})
    assert config.resolve([first, second])["training"]["nanogpt"]["base_model"] == "gpt2"
    # --config overrides apply last, with the same rule
    cfg = config.resolve([base], {"seed": 9, "space": {"lora_r": SMALL_SPACE["lora_r"]}, "stage2": {"rounds": 0}})
    assert cfg["seed"] == 9 and list(cfg["space"]) == ["lora_r"] and cfg["stage2"]["batch"] == 2


def test_extends_names_the_file_a_study_is_merged_over(tmp_path):
    (tmp_path / "presets").mkdir()
    write(tmp_path / "presets" / "base.yaml", yaml.safe_load(TINY.read_text()))
    child = tmp_path / "presets" / "child.yaml"
    child.write_text("extends: base.yaml\nseed: 5\n"
                     "space:\n  lora_dropout: {type: float, low: 0, high: 1, grid: [0.5]}\n")
    cfg = config.resolve([child])
    assert cfg["seed"] == 5 and list(cfg["space"]) == ["lora_dropout"]
    assert [d["name"] for d in cfg["datasets"]] == ["arith", "markov"]
    assert "extends" not in cfg
    assert (config.load(ROOT / "config" / "lora_r32.yaml")["training"]
            == config.load(ROOT / "config" / "lora_r8.yaml")["training"])
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\n")
    with pytest.raises(config.ConfigError, match="extends itself"):
        config.resolve([loop])
    (tmp_path / "bad.yaml").write_text("extends: [a, b]\n")
    with pytest.raises(config.ConfigError, match="bad.yaml: extends: expected a file name"):
        config.resolve([tmp_path / "bad.yaml"])
    (tmp_path / "orphan.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(config.ConfigError, match="missing.yaml: config file not found"):
        config.resolve([tmp_path / "orphan.yaml"])
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(config.ConfigError, match="list.yaml: expected a mapping"):
        config.resolve([tmp_path / "list.yaml"])
    with pytest.raises(config.ConfigError, match="<config>: Additional properties.*extends"):
        config.resolve([TINY], {"extends": "x.yaml"})


def _shuffled(value, data):
    """`value` with every mapping's keys in an order drawn by hypothesis."""
    if isinstance(value, dict):
        keys = data.draw(st.permutations(list(value)))
        return {k: _shuffled(value[k], data) for k in keys}
    if isinstance(value, list):
        return [_shuffled(v, data) for v in value]
    return value


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_the_resolved_text_does_not_depend_on_key_order(data):
    # Snakemake compares a rule's params as text: a study rewritten in another key order must not rerun a sweep.
    raw = yaml.safe_load(TINY.read_text())
    space = raw.pop("space")
    shuffled = _shuffled(raw, data)
    shuffled["space"] = {name: _shuffled(p, data) for name, p in space.items()}  # the parameters' order is the study's
    assert config.dump(config.validate(shuffled, SCHEMA)) == config.dump(TINY_RESOLVED)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["seed", "stage1", "stage2", "rerun", "space", "split"]),
                       st.dictionaries(st.text("abc", min_size=1, max_size=2), st.integers() | st.text(max_size=2),
                                       max_size=3)
                       | st.integers(), max_size=4))
def test_merge_with_itself_or_nothing_changes_nothing(override):
    base, schema = TINY_RESOLVED, SCHEMA
    assert config.merge(base, {}, schema) == base
    merged = config.merge(base, override, schema)
    assert config.merge(merged, override, schema) == merged  # merging is idempotent
    for name in ("space", "split"):  # whole sections: the override's value, nothing of the base's
        if name in override:
            assert merged[name] == override[name]


def test_check_config_resolves_as_snakemake_does(tmp_path):
    study = write(tmp_path / "study.yaml", yaml.safe_load(TINY.read_text()))
    extra = write(tmp_path / "extra.yaml", {"stage2": {"rounds": 1}, "space": SMALL_SPACE})
    # Snakemake's --config reads a nested value as text: both sides reject it alike
    nested = check_config(str(study), "--config", "rerun={top_k: 1}")
    assert nested.returncode == 2 and "rerun.top_k: '1' is not of type 'integer'" in nested.stderr
    proc = run_snakemake(tmp_path, "-n", "--configfile", str(study), "--config", "rerun={top_k: 1}", check=False)
    assert proc.returncode != 0
    assert f"invalid config: {nested.stderr.removeprefix('config error: ').strip()}" in proc.stderr + proc.stdout
    overrides = ["seed=4", "optimizer={method: random}"]
    fixed = check_config(str(study), str(extra), "--config", *overrides, "--print")
    assert fixed.returncode == 0, fixed.stderr
    assert yaml.safe_load(fixed.stdout)["optimizer"]["method"] == "random"
    # the config a real run resolved, read back from the copy it keeps
    run_snakemake(tmp_path, "prefetch", "--cores", "1", "--configfile", str(study), str(extra),
                  "--config", *overrides)
    kept = list((tmp_path / "results" / "configs").glob("*.yaml"))
    assert len(kept) == 1 and kept[0].read_text() == fixed.stdout
    # a second run of the same config keeps the same single file; another config adds one, the first untouched
    first = (kept[0], kept[0].stat().st_mtime_ns)
    run_snakemake(tmp_path, "prefetch", "--cores", "1", "--forcerun", "prefetch_dataset", "--configfile", str(study),
                  str(extra), "--config", *overrides)
    assert list((tmp_path / "results" / "configs").glob("*.yaml")) == [first[0]]
    assert first[0].stat().st_mtime_ns == first[1]
    run_snakemake(tmp_path, "prefetch", "--cores", "1", "--forcerun", "prefetch_dataset", "--configfile", str(study))
    assert len(list((tmp_path / "results" / "configs").glob("*.yaml"))) == 2 and first[0].stat().st_mtime_ns == first[1]
    # a dry run writes nothing
    assert not any(p.name.startswith(".") for p in (tmp_path / "results" / "configs").iterdir())


@pytest.mark.parametrize("bad", [
    {"stage1": {"token_budget": -5}},
    {**with_(), "stage1": {"token_budget": -5}},
    {**with_(), "space": {"lora_r": {"type": "int", "low": 1, "high": 8, "grid": [16]}}},
], ids=["without-datasets", "with-datasets", "grid-outside"])
def test_a_malformed_study_fails_alike_in_check_config_and_snakemake(tmp_path, bad):
    study = write(tmp_path / "bad.yaml", bad)
    checked = check_config(str(study))
    assert checked.returncode == 2 and checked.stderr.startswith("config error: ")
    message = checked.stderr.removeprefix("config error: ").strip()
    assert "stage1.token_budget: -5 is less than the minimum of 1" in message or "space.lora_r.grid" in message
    proc = run_snakemake(tmp_path, "-n", "--configfile", str(study), check=False)
    assert proc.returncode != 0 and f"invalid config: {message}" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()


def _trial_mtimes(workdir: Path) -> dict[str, int]:
    return {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in (workdir / "results").glob("**/metrics.json")}


def _proposal_mtimes(workdir: Path) -> dict[str, int]:
    return {str(p.relative_to(workdir)): p.stat().st_mtime_ns
            for p in (workdir / "results" / "stage2").glob("**/proposals.json")}


@pytest.mark.slow
def test_growing_a_finished_sweep_runs_only_the_new_trials(tmp_path):
    cfg = yaml.safe_load(TINY.read_text())
    study = write(tmp_path / "study.yaml", cfg)
    run_snakemake(tmp_path, "--cores", "2", "--configfile", str(study))
    before, proposals = _trial_mtimes(tmp_path), _proposal_mtimes(tmp_path)
    assert len(before) == 2 * (4 + 2 * 2 + 2 * 3)

    # one more dataset: its own 14 trials and 2 proposals, nothing of the others'
    cfg["datasets"].append({"name": "markov2", "source": {"kind": "builtin", "generator": "markov",
                                                          "options": {"n_docs": 80, "temperature": 2.0}}})
    write(study, cfg)
    counts = job_counts(run_snakemake(tmp_path, "-n", "--configfile", str(study)).stdout)
    assert (counts["trial_stage1"], counts["trial_stage2"], counts["trial_rerun"], counts["propose"]) == (4, 4, 6, 2)
    assert counts["prefetch_dataset"] == counts["normalize"] == counts["select"] == 1
    run_snakemake(tmp_path, "--cores", "2", "--configfile", str(study))
    after = _trial_mtimes(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    assert {k.split("/")[3] for k in set(after) - set(before)} == {"markov2"} and len(after) == 3 * 14
    assert {k: v for k, v in _proposal_mtimes(tmp_path).items() if k in proposals} == proposals

    # one more grid value: its stage-1 trials; the proposals made stay, no stage-2 trial reruns
    before, proposals = after, _proposal_mtimes(tmp_path)
    cfg["space"]["lora_r"]["grid"] = [8, 16]
    write(study, cfg)
    run_snakemake(tmp_path, "--cores", "2", "--configfile", str(study))
    after = _trial_mtimes(tmp_path)
    new_or_redone = {k for k in after if before.get(k) != after[k]}
    assert sum("/stage1/" in k for k in new_or_redone) == 3 * 4  # 3 datasets x 4 new points of the grid
    assert all(k not in before for k in new_or_redone if "/stage1/" in k)
    assert not any("/stage2/" in k for k in new_or_redone)
    assert _proposal_mtimes(tmp_path) == proposals
    assert len(list((tmp_path / "results" / "configs").glob("*.yaml"))) == 3  # one kept config per distinct study


PRESETS = sorted((ROOT / "config").glob("*.yaml")) + sorted((ROOT / "tests" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=[p.name for p in PRESETS])
def test_presets_dry_run_to_the_counts_their_comments_promise(tmp_path, path):
    promise = re.search(r"^# Dry run: (\d+) jobs, (\d+) trials\.$", path.read_text(), re.M)
    assert promise, f"{path.name}: no '# Dry run: N jobs, M trials.' line"
    args = ("-n",) if path == config.DEMO_PATH else ("-n", "--configfile", str(path))  # the demo: no file given
    counts = job_counts(run_snakemake(tmp_path, *args).stdout)
    trials = sum(n for rule, n in counts.items() if rule.startswith("trial_"))
    assert (counts["total"], trials) == (int(promise[1]), int(promise[2]))


def test_check_config_print_into_a_closed_pipe_ends_quietly():
    # `| true` closes the pipe before check-config writes (it reads nothing): the write meets a closed pipe
    # whatever the pipe's buffer. `| head -n 2` is what a user types.
    cli = f"{sys.executable} -m metatune.cli check-config {TINY} --print"
    for reader, out in (("true", ""), ("head -n 2", "seed: 0\ndatasets:\n")):
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", f"{cli} | {reader}"], capture_output=True, text=True)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, out, ""), reader


def test_version_comes_from_the_package_metadata():
    import importlib.metadata
    import tomllib

    proc = subprocess.run([sys.executable, "-m", "metatune.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert proc.stdout.strip() == f"metatune {importlib.metadata.version('metatune')}" == f"metatune {version}"


def test_every_schema_error_is_named_once_in_one_message(tmp_path):
    bad = {"datasets": [{"name": f"m{i}", "source": {"kind": "builtin", "generator": "nope"}} for i in range(9)],
           "stage1": {"token_budget": 0}, "bogus": 1}
    with pytest.raises(config.ConfigError) as e:
        config.validate(bad)
    message = str(e.value)
    assert message.count("datasets[") + message.count("stage1.token_budget") + message.count("bogus") == 6
    assert message.endswith("more)")
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    with pytest.raises(config.ConfigError, match="empty.yaml: expected a mapping of config keys, got an empty file"):
        config.load(tmp_path / "empty.yaml")


@pytest.mark.parametrize("entries", [
    ["seed=4"], ["optimizer={method: random}"], ["training={mode: simulated, timeout_s: 5}", "seed=1"],
    ["stage1={token_budget: 5}"], ["rerun={top_k: 1, seeds: 2}"], ["tokenizer={name: 'hf:org/model'}"],
])
def test_cluster_jobs_read_the_same_overrides(entries):
    # Each Slurm job re-reads the Snakefile with the --config Snakemake writes for it from the parsed overrides;
    # it must parse back to the same mapping, so the job resolves the config its controller resolved.
    from snakemake.cli import parse_config
    from snakemake.common import dict_to_key_value_args

    parsed = parse_config(entries)
    assert parse_config(dict_to_key_value_args(parsed, repr_obj=True)) == parsed


def test_a_profiles_configfile_is_the_study(tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "config.v8+.yaml").write_text(f"configfile: [{TINY}]\n")
    counts = job_counts(run_snakemake(tmp_path, "-n", "--profile", str(profile)).stdout)
    assert (counts["trial_stage1"], counts["total"]) == (8, 73)  # tiny.yaml's own counts, nothing of the demo's
