"""profiles/slurm without a cluster: a dry run names a missing account instead of submitting without -A silently."""

import os
import subprocess

import pytest

from conftest import ROOT

TINY = ROOT / "tests" / "configs" / "tiny.yaml"
WARNING = "warning: no Slurm account: METATUNE_SLURM_ACCOUNT is not set"


def dry_run(workdir, *args, account=None):
    env = {k: v for k, v in os.environ.items() if k != "METATUNE_SLURM_ACCOUNT"}
    if account is not None:
        env["METATUNE_SLURM_ACCOUNT"] = account
    cmd = ["snakemake", "-n", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(TINY),
           *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("account", [None, ""])
def test_slurm_profile_without_account_warns_once(tmp_path, account):
    out = dry_run(tmp_path, "--profile", str(ROOT / "profiles" / "slurm"), account=account)
    assert out.count(WARNING) == 1
    assert "slurm_account=," in out  # what it warns about: the jobs really carry no account


def test_slurm_profile_with_account_is_quiet(tmp_path):
    out = dry_run(tmp_path, "--profile", str(ROOT / "profiles" / "slurm"), account="es_test")
    assert WARNING not in out and "slurm_account=es_test" in out


def test_no_warning_without_the_slurm_profile(tmp_path):
    assert WARNING not in dry_run(tmp_path)
    assert WARNING not in dry_run(tmp_path, "--profile", str(ROOT / "profiles" / "local-4070s"))
