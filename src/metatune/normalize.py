"""Normalize raw records into the unified JSONL the rest of the workflow reads.

text datasets become {"text"}; instruction datasets become {"prompt", "completion"} (+ "tests", "task_id" for
MBPP). Empty records are dropped and exact duplicates removed. The split is seeded and exact: records are ordered
by a keyed hash of their content and cut at the ratios, so it is reproducible and does not depend on the order
the source delivered them in. Memory holds one 16-byte digest per record, never the corpus.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from metatune.io import DataError, atomic_write_json, iter_jsonl

SPLITS = ("train", "val", "test")

# Canonical field names per template, and which of them may be missing from a record.
TEMPLATE_FIELDS = {
    "plain": {"prompt": True, "completion": True},
    "alpaca": {"instruction": True, "input": False, "output": True},
    "mbpp": {"text": True, "code": True, "test_list": True, "task_id": False, "test_setup_code": False},
}


@dataclass(frozen=True)
class DatasetFormat:
    name: str
    format: str  # text | instruction
    template: str  # plain | alpaca | mbpp
    fields: dict  # canonical name -> source column

    @classmethod
    def from_config(cls, ds: dict) -> DatasetFormat:
        return cls(ds["name"], ds["format"], ds["template"], dict(ds.get("fields", {})))

    def column(self, canonical: str) -> str:
        return self.fields.get(canonical, canonical)


@dataclass
class NormalizeStats:
    n_raw: int = 0
    n_empty: int = 0
    n_duplicates: int = 0
    n_kept: int = 0
    n_train: int = 0
    n_val: int = 0
    n_test: int = 0

    @property
    def duplicate_rate(self) -> float:
        return self.n_duplicates / max(1, self.n_raw - self.n_empty)


def _get(record: dict, fmt: DatasetFormat, canonical: str, required: bool, where: str):
    column = fmt.column(canonical)
    if column not in record:
        if required:
            raise DataError(f"dataset {fmt.name}: {where}: missing field {column!r} (for {canonical}; see fields)")
        return None
    return record[column]


def _text(value, fmt: DatasetFormat, column: str, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"dataset {fmt.name}: {where}: field {column!r} must be text, got {type(value).__name__}")
    return value


def normalize_record(record: dict, fmt: DatasetFormat, where: str) -> dict | None:
    """One raw record -> its normalized form, or None when it is empty."""
    if fmt.format == "text":
        text = _text(_get(record, fmt, "text", True, where), fmt, fmt.column("text"), where).lstrip("\ufeff")
        return {"text": text} if text.strip() else None

    spec = TEMPLATE_FIELDS[fmt.template]
    values = {name: _get(record, fmt, name, required, where) for name, required in spec.items()}
    if fmt.template == "plain":
        prompt = _text(values["prompt"], fmt, fmt.column("prompt"), where)
        completion = _text(values["completion"], fmt, fmt.column("completion"), where)
        out = {"prompt": prompt, "completion": completion}
    elif fmt.template == "alpaca":
        instruction = _text(values["instruction"], fmt, fmt.column("instruction"), where).strip()
        extra = _text(values["input"], fmt, fmt.column("input"), where).strip()
        out = {"prompt": f"{instruction}\n\n{extra}" if extra else instruction,
               "completion": _text(values["output"], fmt, fmt.column("output"), where)}
    else:  # mbpp: the prompt states the task and the tests the code must pass, as MBPP's paper does
        tests = values["test_list"]
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise DataError(f"dataset {fmt.name}: {where}: field {fmt.column('test_list')!r} must be a list of strings")
        text = _text(values["text"], fmt, fmt.column("text"), where).strip()
        out = {"prompt": f"{text}\nYour code should pass these tests:\n\n" + "\n".join(tests),
               "completion": _text(values["code"], fmt, fmt.column("code"), where), "tests": tests}
        for optional in ("task_id", "test_setup_code"):
            if values[optional] is not None:
                out[optional] = values[optional]
    if not out["prompt"].strip() or not out["completion"].strip():
        return None
    return out


def _digest(normalized: dict) -> bytes:
    return hashlib.blake2b(json.dumps(normalized, sort_keys=True, ensure_ascii=False).encode(), digest_size=16).digest()


def split_counts(n: int, ratios: dict) -> tuple[int, int, int]:
    """Exact split sizes; with two records or more, train and val each get at least one."""
    n_val = max(1, round(n * ratios["val"])) if n >= 2 else 0
    n_test = round(n * ratios["test"])
    n_test = min(n_test, n - n_val - 1) if n >= 2 else 0
    return n - n_val - n_test, n_val, max(0, n_test)


def normalize(raw_path: str | Path, fmt: DatasetFormat, ratios: dict, out_dir: str | Path) -> NormalizeStats:
    """Write train/val/test.jsonl and stats.json for one dataset into `out_dir`."""
    raw_path, out_dir = Path(raw_path), Path(out_dir)
    stats = NormalizeStats()
    digests: list[bytes] = []
    seen: set[bytes] = set()
    keep: list[bool] = []
    # Pass 1: validate every record, find empties and duplicates, and remember a digest for each kept one.
    for lineno, record in enumerate(iter_jsonl(raw_path), start=1):
        stats.n_raw += 1
        normalized = normalize_record(record, fmt, f"{raw_path}:{lineno}")
        if normalized is None:
            stats.n_empty += 1
            keep.append(False)
            continue
        d = _digest(normalized)
        if d in seen:
            stats.n_duplicates += 1
            keep.append(False)
            continue
        seen.add(d)
        digests.append(d)
        keep.append(True)
    stats.n_kept = len(digests)
    if stats.n_kept < 2:
        raise DataError(
            f"dataset {fmt.name}: {stats.n_kept} record(s) left after dropping {stats.n_empty} empty and "
            f"{stats.n_duplicates} duplicate of {stats.n_raw}; train and val need at least one each"
        )

    # The split: order kept records by a hash keyed with the seed, then cut at the ratios.
    seed = str(ratios.get("seed", 0)).encode()
    order = sorted(range(len(digests)), key=lambda i: hashlib.blake2b(digests[i], key=seed, digest_size=8).digest())
    n_train, n_val, n_test = split_counts(len(digests), ratios)
    split_of = bytearray(len(digests))
    for rank, i in enumerate(order):
        split_of[i] = 0 if rank < n_train else (1 if rank < n_train + n_val else 2)
    stats.n_train, stats.n_val, stats.n_test = n_train, n_val, n_test

    # Pass 2: write each kept record to its split, in source order.
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_paths = {s: out_dir / f".{s}.jsonl.tmp" for s in SPLITS}
    files = {s: p.open("w", encoding="utf-8") for s, p in tmp_paths.items()}
    try:
        kept_index = 0
        for lineno, (record, kept) in enumerate(zip(iter_jsonl(raw_path), keep), start=1):
            if not kept:
                continue
            normalized = normalize_record(record, fmt, f"{raw_path}:{lineno}")
            files[SPLITS[split_of[kept_index]]].write(json.dumps(normalized, ensure_ascii=False, sort_keys=True) + "\n")
            kept_index += 1
    finally:
        for f in files.values():
            f.close()
    for s, p in tmp_paths.items():
        p.replace(out_dir / f"{s}.jsonl")
    atomic_write_json(out_dir / "stats.json", {**asdict(stats), "duplicate_rate": stats.duplicate_rate})
    return stats
