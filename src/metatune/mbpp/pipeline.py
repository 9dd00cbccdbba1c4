"""MBPP in the workflow: evaluate a model (or a model plus a rerun's adapter) end to end, pick each dataset's
winning adapter, and compare adapters with the zero-shot baseline."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from metatune.history import read_collections
from metatune.io import DataError, read_json
from metatune.mbpp import data, generate, prompts
from metatune.mbpp.sandbox import SandboxSettings
from metatune.mbpp.score import compare, score_files
from metatune.verdict import separation


@dataclass(frozen=True)
class EvalSettings:
    """The config's `mbpp` section."""

    problems: str = "hub:full"
    split: str = "test"
    limit: int | None = None
    prompt_format: str = "fewshot"
    n_samples: int = 1
    temperature: float = 0.0
    top_p: float = 0.95
    max_new_tokens: int = 512
    batch_size: int = 8
    load_in_4bit: bool = False
    k: tuple[int, ...] = (1,)
    workers: int = 2
    timeout_s: float = 3.0

    @classmethod
    def from_config(cls, section: dict) -> EvalSettings:
        return cls(**{k: v for k, v in section.items() if k != "model"} | {"k": tuple(section["k"])})


def evaluate(model: str, adapter: str | None, settings: EvalSettings, generations: str | Path,
             results: str | Path, seed: int = 0) -> dict:
    """Generate completions for the split's tasks and score them in the sandbox.

    Generations are appended to `<generations>.partial` as they come and renamed when complete: Snakemake
    deletes a failed job's outputs, but not that file, so a stopped evaluation resumes where it stopped."""
    problems = data.load_problems(settings.problems)
    tasks = data.select_split(problems, settings.split)[: settings.limit]
    examples = prompts.few_shot_examples(problems) if settings.prompt_format == "fewshot" else None
    gen = generate.GenerationSettings(
        model=model, adapter=adapter, prompt_format=settings.prompt_format, n_samples=settings.n_samples,
        temperature=settings.temperature, top_p=settings.top_p, seed=seed, max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size, load_in_4bit=settings.load_in_4bit,
    )
    partial = Path(f"{generations}.partial")
    generate.generate(tasks, partial, gen, examples=examples)
    os.replace(partial, generations)
    sandbox = SandboxSettings(timeout_s=settings.timeout_s)
    return score_files(settings.problems, generations, results, sandbox, settings.workers, list(settings.k))


def winning_adapter(best_csv: str | Path, dataset: str, rerun_collections: list[str]) -> str:
    """The adapter of the dataset's winning configuration (best.csv), from its seed with the lowest val_loss."""
    with open(best_csv, newline="") as f:
        winners = [r for r in csv.DictReader(f) if r["dataset"] == dataset and r["winner"] == "True"]
    if not winners:
        raise DataError(f"{best_csv}: dataset {dataset} has no winner (every rerun configuration had a failed seed)")
    prefix = f"top{winners[0]['rank']}-"
    ok = [(m["val_loss"], p) for p, m in read_collections(rerun_collections)
          if m["run_id"].startswith(prefix) and m["status"] == "ok"]
    adapter = Path(min(ok)[1]).parent / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise DataError(f"{adapter}: no saved adapter (rerun.save_adapter must be on for datasets with mbpp: true)")
    return str(adapter)


COMPARISON_COLUMNS = ["dataset", "adapter", "n_tasks", "adapter_pass@1", "baseline_pass@1", "diff", "ci95_low",
                      "ci95_high", "verdict"]


def comparison_rows(baseline_results: str | Path, adapter_results: dict[str, str]) -> list[dict]:
    """One row per dataset: pass@1 of its adapter and of the baseline on the same tasks, their paired difference
    (task by task) with a bootstrap 95% interval, and the verdict: `better`, `worse` or `not separated` as the
    interval lies above zero, below it, or across it."""
    baseline = read_json(baseline_results)
    rows = []
    for dataset, path in adapter_results.items():
        c = compare(read_json(path), baseline)
        rows.append({"dataset": dataset, "adapter": read_json(Path(path).with_name("adapter.json"))["adapter"],
                     "n_tasks": c["n_tasks"], "adapter_pass@1": c["pass@1_adapter"],
                     "baseline_pass@1": c["pass@1_baseline"], "diff": c["delta_pass@1"],
                     "ci95_low": c["ci95"][0], "ci95_high": c["ci95"][1], "verdict": separation(*c["ci95"])})
    return rows
