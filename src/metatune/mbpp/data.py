"""MBPP problems: load them from the HF hub or a local copy, and pick a split by task id.

Both MBPP flavours are read into one `Problem` type:
    full       mbpp.jsonl (or hub config "full"): text, code, test_list, test_setup_code, challenge_test_list
    sanitized  sanitized-mbpp.json (or hub config "sanitized"): prompt, code, test_imports, test_list
The splits are defined by task id (MBPP README), not by the hub's split names, so a local file and the hub
give the same tasks for the same split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metatune.io import DataError, iter_jsonl, read_json

HUB_DATASET = "google-research-datasets/mbpp"

# Inclusive task-id ranges, from the MBPP README.
SPLITS: dict[str, tuple[int, int]] = {
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
}


@dataclass(frozen=True)
class Problem:
    task_id: int
    text: str  # the natural-language task
    code: str  # the reference solution (the positive control)
    tests: tuple[str, ...]  # `assert ...` lines
    setup_code: str = ""  # runs after the completion, before the tests (it may use the completion's classes)
    test_imports: tuple[str, ...] = ()  # import lines the tests need (sanitized flavour)


def _problem(row: dict, where: str) -> Problem:
    """Build a Problem from a row of either flavour; `where` names the file and line for errors."""
    try:
        task_id = row["task_id"]
        text = row["text"] if "text" in row else row["prompt"]
        code, tests = row["code"], row["test_list"]
    except KeyError as e:
        raise DataError(f"{where}: missing field {e.args[0]!r}") from None
    if not isinstance(task_id, int) or isinstance(task_id, bool):
        raise DataError(f"{where}: task_id must be an integer, got {task_id!r}")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise DataError(f"{where}: task {task_id}: test_list must be a non-empty list of strings")
    for field, value in (("text", text), ("code", code)):
        if not isinstance(value, str):
            raise DataError(f"{where}: task {task_id}: {field} must be a string")
    imports = row.get("test_imports") or []
    return Problem(
        task_id=task_id,
        text=text,
        code=code,
        tests=tuple(tests),
        setup_code=row.get("test_setup_code") or "",
        test_imports=tuple(imports),
    )


def load_local(path: str | Path) -> list[Problem]:
    """Read mbpp.jsonl (one task per line) or sanitized-mbpp.json (one JSON list)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        problems = [_problem(row, f"{path}:{i}") for i, row in enumerate(iter_jsonl(path), start=1)]
    else:
        rows = read_json(path)
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON list of tasks, got {type(rows).__name__}")
        problems = [_problem(row, f"{path}: item {i}") for i, row in enumerate(rows)]
    seen: set[int] = set()
    for p in problems:
        if p.task_id in seen:
            raise DataError(f"{path}: task_id {p.task_id} appears twice")
        seen.add(p.task_id)
    return sorted(problems, key=lambda p: p.task_id)


def load_hub(config: str = "full") -> list[Problem]:
    """Every split of the hub's MBPP (`full` or `sanitized`), cached by `datasets` like any other download."""
    if config not in ("full", "sanitized"):
        raise DataError(f"{HUB_DATASET}: unknown config {config!r} (expected 'full' or 'sanitized')")
    import datasets  # imported here: it is slow to import and only this path needs it

    dsd = datasets.load_dataset(HUB_DATASET, config)
    problems = [_problem(dict(row), f"{HUB_DATASET}/{config}/{split}") for split in dsd for row in dsd[split]]
    return sorted(problems, key=lambda p: p.task_id)


def load_problems(source: str | Path) -> list[Problem]:
    """`hub:full` / `hub:sanitized` for the hub, anything else is a local file."""
    source = str(source)
    if source.startswith("hub:"):
        return load_hub(source.removeprefix("hub:"))
    return load_local(source)


def select_split(problems: list[Problem], split: str) -> list[Problem]:
    """The problems whose task ids fall in `split` (see SPLITS)."""
    if split not in SPLITS:
        raise DataError(f"unknown MBPP split {split!r}; expected one of {sorted(SPLITS)}")
    lo, hi = SPLITS[split]
    return [p for p in problems if lo <= p.task_id <= hi]


def by_id(problems: list[Problem]) -> dict[int, Problem]:
    return {p.task_id: p for p in problems}

