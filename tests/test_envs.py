"""The conda environment the rules run in pins what pyproject.toml pins."""

import tomllib

import yaml

from conftest import ROOT


def test_conda_env_agrees_with_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for env in sorted((ROOT / "envs").glob("*.yaml")):
        deps = yaml.safe_load(env.read_text())["dependencies"]
        pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
        pins = [p for p in pip if not p.startswith("-e")]
        assert sorted(pins) == sorted(pyproject), env.name
        assert "-e .." in pip, f"{env.name} must install the project itself"
