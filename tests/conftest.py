"""Shared fixtures: the real data in ../shared/data, GPT-2 BPE offline, and a runner for the workflow."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
SHARED = Path(os.environ.get("METATUNE_SHARED_DATA", ROOT.parent / "shared" / "data"))
GPT2_BPE = SHARED / "gpt2_tokenizer" / "gpt2.tiktoken"
# tiktoken caches a downloaded rank file under the sha1 of its URL; r50k_base's is this one.
R50K_CACHE_NAME = "0ea1e91bbb3a60f729a8dc8f777fd2fc07cd8df4"

# The hub is out of reach in tests: anything that tries it fails fast instead of hanging.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"test data not found at {SHARED} (set METATUNE_SHARED_DATA)")
    return SHARED


@pytest.fixture(scope="session", autouse=True)
def tiktoken_cache(tmp_path_factory) -> Path:
    """GPT-2 BPE offline: tiktoken reads r50k_base's ranks from this cache instead of downloading them."""
    cache = tmp_path_factory.mktemp("tiktoken")
    if GPT2_BPE.is_file():
        shutil.copy(GPT2_BPE, cache / R50K_CACHE_NAME)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    return cache


# What a copy of the repository leaves out: git, a workflow's outputs and caches from runs in the checkout, venvs.
NOT_COPIED = shutil.ignore_patterns(".git", ".snakemake", "results", "resources", "logs", "__pycache__",
                                    ".pytest_cache", ".ruff_cache", ".venv", "report.html")


def copy_repository(dest: Path) -> Path:
    """A scratch copy of the checkout (what a fresh clone holds, plus uncommitted edits) to run the workflow from."""
    shutil.copytree(ROOT, dest, ignore=NOT_COPIED)
    return dest


def run_snakemake(workdir: Path, *args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run the project's workflow in `workdir` (results land there, not in the checkout)."""
    cmd = ["snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory) -> Path:
    """The tiny simulated sweep of tests/configs/tiny.yaml, run once for the whole session (it takes a minute or
    two on 2 cores). Tests read it or run what leaves its results as they are; one that changes them runs its own."""
    workdir = tmp_path_factory.mktemp("tiny-sweep")
    run_snakemake(workdir, "--cores", "2", "--configfile", str(TINY))
    return workdir


def without_clock(table: Path) -> str:
    """A runs.csv without its started_at and finished_at columns: what two sweeps of one config share (the
    trials' times are when each ran)."""
    import csv
    import io

    with open(table, newline="") as f:
        rows = list(csv.reader(f))
    keep = [i for i, name in enumerate(rows[0]) if name not in ("started_at", "finished_at")]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([[row[i] for i in keep] for row in rows])
    return out.getvalue()


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of `snakemake -n`."""
    counts: dict[str, int] = {}
    lines = dry_run_output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats"))
    for line in lines[start + 3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts
