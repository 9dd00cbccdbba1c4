"""The pins and the rules' conda env: exact versions in one place (constraints.txt), the env generated from it and
creatable from the copy Snakemake makes, and the workflow's own library imported from the workflow's directory
inside every rule. What needs conda itself is left to a machine with conda (docs/conda.md)."""

import importlib.util
import os
import shutil
import subprocess
import sys
import venv

import pytest
import yaml
from packaging.utils import canonicalize_name

from conftest import ROOT, copy_repository

spec = importlib.util.spec_from_file_location("pins", ROOT / "envs" / "pins.py")
pins = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pins)

ENV = ROOT / "envs" / "metatune.yaml"


def pip_section(env_text: str) -> list[str]:
    deps = yaml.safe_load(env_text)["dependencies"]
    return next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)


def test_conda_env_is_generated_from_the_pins():
    assert ENV.read_text() == pins.conda_env(), "regenerate it: python envs/pins.py conda > envs/metatune.yaml"


def test_conda_env_lists_only_third_party_packages_at_the_pinned_versions():
    constraints = pins.read_constraints()
    listed = {}
    for line in pip_section(ENV.read_text()):
        if line.startswith("--"):
            assert line.startswith("--extra-index-url https://download.pytorch.org/whl/"), line
            continue
        name, sep, version = line.partition("==")
        assert sep and "/" not in line and not line.startswith((".", "-e")), f"not a pinned package: {line!r}"
        listed[canonicalize_name(name)] = version
    assert listed == {canonicalize_name(r.name): constraints[canonicalize_name(r.name)] for r in pins.requirements()}
    assert listed["torch"].endswith("+cpu")  # not plain PyPI's multi-GB CUDA build


def test_constraints_pin_every_requirement_inside_pyprojects_ranges():
    constraints = pins.read_constraints()
    for req in pins.requirements(pins.INSTALLED_EXTRAS):
        version = constraints.get(canonicalize_name(req.name))
        assert version is not None, f"constraints.txt does not pin {req.name}"
        assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version} is outside {req}"
    for req in pins.requirements():  # a range, not a pin, for library users
        assert not any(s.operator == "==" for s in req.specifier), f"pyproject.toml pins {req}: pin in constraints.txt"


def test_cuda_build_is_one_flag_away():
    env = pins.conda_env("cu128")
    assert "--extra-index-url https://download.pytorch.org/whl/cu128" in pip_section(env)
    assert any(line.startswith("torch==") and line.endswith("+cu128") for line in pip_section(env))


@pytest.mark.parametrize("line", ["torch>=2", "torch==2.*", "torch", "torch==2.13.0,<3"])
def test_constraints_reject_anything_but_exact_pins(tmp_path, line):
    path = tmp_path / "constraints.txt"
    path.write_text(f"# a comment\nnumpy==2.4.6\n{line}\n")
    with pytest.raises(ValueError, match="not an exact pin"):
        pins.read_constraints(path)


def test_env_pip_section_installs_from_snakemakes_copy(tmp_path):
    """Snakemake copies the env to .snakemake/conda/<hash>.yaml; conda writes the pip section to a requirements
    file beside the copy and runs pip there. Do the same into a fresh venv (a dry run: every pinned package, from
    that folder; `-e ..` failed right here)."""
    copy_dir = tmp_path / "workflow" / ".snakemake" / "conda"
    copy_dir.mkdir(parents=True)
    shutil.copy(ENV, copy_dir / "0123456789abcdef.yaml")
    requirements = copy_dir / "condaenv.0123.requirements.txt"
    requirements.write_text("\n".join(pip_section((copy_dir / "0123456789abcdef.yaml").read_text())) + "\n")
    venv.create(tmp_path / "fresh", with_pip=True)
    # --no-deps: each pinned package on its own (the full resolution is what CI installs from constraints.txt);
    # short timeouts: a wheel index this machine cannot reach must not stall the test.
    cmd = [str(tmp_path / "fresh" / "bin" / "python"), "-m", "pip", "install", "--dry-run", "--no-deps",
           "--disable-pip-version-check", "--timeout", "5", "--retries", "0", "-r", requirements.name]
    proc = subprocess.run(cmd, cwd=copy_dir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    would = proc.stdout.split("Would install", 1)[1].split()
    assert {canonicalize_name(w.rsplit("-", 1)[0]) for w in would} == {
        canonicalize_name(r.name) for r in pins.requirements()}


PROBE = """
import os as _os
if _os.environ.get("METATUNE_IMPORT_PROBE"):
    with open(_os.environ["METATUNE_IMPORT_PROBE"], "a") as _probe:
        _probe.write(__file__ + "\\n")
"""


def test_rules_import_the_workflows_own_library(tmp_path):
    """A copy of the workflow, run with no PYTHONPATH (Snakemake removes it when it activates a conda env) while
    another metatune is installed: every job, script and shell rules alike, imports the copy's library."""
    workflow = copy_repository(tmp_path / "copy")
    with (workflow / "src" / "metatune" / "__init__.py").open("a") as init:
        init.write(PROBE)
    config = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())
    config["datasets"] = config["datasets"][:1]
    config["space"] = {k: {**v, "grid": v["grid"][:1]} for k, v in config["space"].items()}
    (tmp_path / "one_trial.yaml").write_text(yaml.safe_dump(config))
    probe = tmp_path / "imports.txt"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"METATUNE_IMPORT_PROBE": str(probe)}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(workflow / "Snakefile"), "--directory", str(tmp_path / "run"),
           "stage1", "--cores", "2", "--configfile", str(tmp_path / "one_trial.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    imported = probe.read_text().splitlines()
    # the controller, then prefetch, normalize and metafeatures (script:), the trial (shell:) and its collection
    assert len(imported) == 6, imported
    assert set(imported) == {str(workflow / "src" / "metatune" / "__init__.py")}
