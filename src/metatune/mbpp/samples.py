"""MBPP samples (JSONL): one completion per line, `{"task_id": int, "completion": str, "sample": int}`.

`sample` numbers the completions of one task (0 for greedy decoding); a file without it (DESIGN.md's minimal
contract) gets its samples numbered in file order. Written by `generate`, read by `score`. A line whose
completion is not a string is kept as a sample that cannot run (`malformed` says why): it is scored `error`,
and the rest of the file still is scored.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from metatune.io import DataError, iter_jsonl


@dataclass(frozen=True)
class Sample:
    task_id: int
    completion: str
    sample: int = 0
    malformed: str = ""  # why this line cannot be run, if it cannot


def read_samples(path: str | Path) -> list[Sample]:
    """Every sample of a file, checked: the message of any error names the file and line."""
    samples: list[Sample] = []
    seen: set[tuple[int, int]] = set()
    next_index: Counter[int] = Counter()
    path = Path(path)
    for lineno, row in enumerate(iter_jsonl(path), start=1):
        task_id, completion = row.get("task_id"), row.get("completion")
        if not isinstance(task_id, int) or isinstance(task_id, bool):
            raise DataError(f"{path}:{lineno}: task_id must be an integer, got {task_id!r}")
        malformed = ""
        if not isinstance(completion, str):
            malformed = f"{path.name}:{lineno}: completion is a {type(completion).__name__}, not a string"
            completion = ""
        index = row.get("sample", next_index[task_id])
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise DataError(f"{path}:{lineno}: task {task_id}: sample must be a non-negative integer")
        if (task_id, index) in seen:
            raise DataError(f"{path}:{lineno}: task {task_id} sample {index} appears twice")
        seen.add((task_id, index))
        next_index[task_id] = index + 1
        samples.append(Sample(task_id, completion, index, malformed))
    return samples


def append_sample(f, s: Sample) -> None:
    """Append one line and flush it: a run killed right after still has every finished sample on disk."""
    f.write(json.dumps({"task_id": s.task_id, "completion": s.completion, "sample": s.sample}) + "\n")
    f.flush()
