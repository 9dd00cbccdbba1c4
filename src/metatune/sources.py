"""Dataset sources and the prefetch step: read records from the hub, local files or a built-in generator.

Prefetch writes the raw records, unchanged apart from being capped, to `records.jsonl` plus a `manifest.json`
that says where they came from. Every source is capped by `max_total_bytes` (bytes of the JSON lines kept) and
`max_records`; a capped hub or local source is streamed, so it never reads more than it keeps.
"""

from __future__ import annotations

import json
import random
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metatune.io import DataError, atomic_write_json, iter_jsonl
from metatune.progress import progress


@dataclass(frozen=True)
class PrefetchResult:
    n_records: int
    n_bytes: int
    capped: bool


# ---------------------------------------------------------------------------------------------------------------
# Built-in offline sources: they need nothing but this Python, so the demo runs anywhere.


def stdlib_code(options: dict) -> Iterator[dict]:
    """The standard library's own .py files (a Python code corpus), in a stable order; tests and vendored
    packages are left out so the corpus is the library's code, not its fixtures."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idle_test", "lib2to3", "__pycache__"}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if skip & set(rel.parts):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # a handful of stdlib files are test fixtures in other encodings
        yield {"text": text, "path": str(rel)}


def pydoc_topics(options: dict) -> Iterator[dict]:
    """The interpreter's help topics (`help('FOR')` and friends): English technical prose."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield {"text": topics[name], "topic": name}


def arithmetic(options: dict) -> Iterator[dict]:
    """Synthetic arithmetic: lines like `(3 + 14) * 2 = 34`. Deeper expressions make a harder language."""
    rng = random.Random(options.get("seed", 0))
    n_docs = options.get("n_docs", 2000)
    lines_per_doc = options.get("lines_per_doc", 16)
    max_depth = options.get("max_depth", 3)

    def expr(depth: int) -> str:
        if depth == 0 or rng.random() < 0.3:
            return str(rng.randint(0, 99))
        op = rng.choice("+-*")
        return f"({expr(depth - 1)} {op} {expr(depth - 1)})"

    for _ in range(n_docs):
        lines = []
        for _ in range(lines_per_doc):
            e = expr(max_depth)
            lines.append(f"{e} = {eval(e)}")  # noqa: S307 - we built the expression ourselves
        yield {"text": "\n".join(lines)}


def markov(options: dict) -> Iterator[dict]:
    """A synthetic first-order Markov language over invented words. Lower `temperature` concentrates each
    word's successors, so the corpus's entropy is a dial: the optimizer sees datasets of chosen difficulty."""
    import numpy as np

    rng = np.random.default_rng(options.get("seed", 0))
    vocab = options.get("vocab", 300)
    temperature = options.get("temperature", 1.0)
    n_docs = options.get("n_docs", 1000)
    words_per_doc = options.get("words_per_doc", 150)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=rng.integers(2, 8))) for _ in range(vocab)]
    logits = rng.standard_normal((vocab, vocab)) * 3.0 / temperature
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    for _ in range(n_docs):
        state = int(rng.integers(vocab))
        out = []
        for u in rng.random(words_per_doc):
            state = min(int(np.searchsorted(cdf[state], u)), vocab - 1)
            out.append(words[state])
        yield {"text": " ".join(out) + "."}


BUILTIN_GENERATORS = {
    "stdlib_code": stdlib_code,
    "pydoc_topics": pydoc_topics,
    "arithmetic": arithmetic,
    "markov": markov,
}


# ---------------------------------------------------------------------------------------------------------------
# Hub and local files, both through HF `datasets`.

LOADER_BY_SUFFIX = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".csv": "csv",
                    ".parquet": "parquet"}


def _local_loader(paths: list[str], loader: str, dataset: str) -> str:
    if loader != "auto":
        return loader
    suffix = Path(paths[0]).suffix.lower()
    if suffix not in LOADER_BY_SUFFIX:
        raise DataError(f"dataset {dataset}: cannot tell the format of {paths[0]} (set source.loader)")
    return LOADER_BY_SUFFIX[suffix]


def _diagnose_local(paths: list[str], loader: str, dataset: str, error: Exception) -> DataError:
    """datasets' own errors rarely say which line broke; find it ourselves for the formats we can read."""
    for p in paths:
        try:
            if loader == "json" and Path(p).suffix.lower() == ".jsonl":
                for _ in iter_jsonl(p):
                    pass
            elif loader == "json":
                json.loads(Path(p).read_text(encoding="utf-8"))
            elif loader in ("text", "csv"):
                Path(p).read_bytes().decode("utf-8")
        except DataError as e:
            return DataError(f"dataset {dataset}: {e}")
        except UnicodeDecodeError as e:
            return DataError(f"dataset {dataset}: {p}: not UTF-8 ({e.reason} at byte {e.start})")
        except json.JSONDecodeError as e:
            return DataError(f"dataset {dataset}: {p}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}")
    return DataError(f"dataset {dataset}: could not read {', '.join(paths)}: {type(error).__name__}: {error}")


def local_records(source: dict, dataset: str, cache_dir: str | None, stream: bool) -> Iterator[dict]:
    import datasets

    paths = [str(p) for p in source["paths"]]
    for p in paths:
        if not Path(p).is_file():
            raise DataError(f"dataset {dataset}: source file not found: {p}")
    loader = _local_loader(paths, source.get("loader", "auto"), dataset)
    kwargs: dict[str, Any] = {}
    if loader == "text":
        kwargs["sample_by"] = source.get("sample_by", "document")
    try:
        ds = datasets.load_dataset(
            loader, data_files=paths, split="train", cache_dir=cache_dir, streaming=stream, **kwargs
        )
        yield from ds
    except DataError:
        raise
    except Exception as e:  # datasets wraps parser errors in several exception types
        raise _diagnose_local(paths, loader, dataset, e) from None


def hf_records(source: dict, dataset: str, cache_dir: str | None, stream: bool) -> Iterator[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(
            source["path"],
            source.get("name"),
            split=source.get("split", "train"),
            revision=source.get("revision"),
            data_files=source.get("data_files"),
            cache_dir=cache_dir,
            streaming=stream,
        )
        yield from ds
    except Exception as e:
        raise DataError(f"dataset {dataset}: loading {source['path']!r} from the hub failed:"
                        f" {type(e).__name__}: {e}") from None


def iter_source(source: dict, dataset: str, cache_dir: str | None = None) -> Iterator[dict]:
    """Records of a source, before capping. Capped sources are streamed."""
    stream = source.get("max_total_bytes") is not None or source.get("max_records") is not None
    kind = source["kind"]
    if kind == "builtin":
        return BUILTIN_GENERATORS[source["generator"]](source.get("options", {}))
    if kind == "local":
        return local_records(source, dataset, cache_dir, stream)
    if kind == "hf":
        return hf_records(source, dataset, cache_dir, stream)
    raise DataError(f"dataset {dataset}: unknown source kind {kind!r}")


def capped_lines(records: Iterable[dict], source: dict, dataset: str) -> Iterator[str]:
    """JSON lines of the records, stopping at the source's caps. A first record larger than the byte cap is an
    error: an empty dataset because of a cap is never what the user meant."""
    max_bytes = source.get("max_total_bytes")
    max_records = source.get("max_records")
    total = 0
    for i, record in enumerate(records):
        if max_records is not None and i >= max_records:
            return
        line = json.dumps(record, ensure_ascii=False, sort_keys=True, default=str) + "\n"
        size = len(line.encode("utf-8"))
        if max_bytes is not None and total + size > max_bytes:
            if i == 0:
                raise DataError(
                    f"dataset {dataset}: source.max_total_bytes={max_bytes} is smaller than the first record "
                    f"({size} bytes)"
                )
            return
        total += size
        yield line


def prefetch(source: dict, dataset: str, out_dir: str | Path, cache_dir: str | None = None) -> PrefetchResult:
    """Write `records.jsonl` and `manifest.json` for one dataset into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / ".records.jsonl.tmp"
    n = n_bytes = 0
    with tmp.open("w", encoding="utf-8") as f:
        lines = capped_lines(iter_source(source, dataset, cache_dir), source, dataset)
        for line in progress(lines, f"prefetch {dataset}", "records", source.get("max_records")):
            f.write(line)
            n += 1
            n_bytes += len(line.encode("utf-8"))
    if n == 0:
        tmp.unlink()
        raise DataError(f"dataset {dataset}: the source produced no records")
    capped = any(source.get(k) is not None for k in ("max_total_bytes", "max_records"))
    tmp.replace(out_dir / "records.jsonl")
    atomic_write_json(
        out_dir / "manifest.json",
        {"dataset": dataset, "source": source, "n_records": n, "n_bytes": n_bytes, "capped": capped},
    )
    return PrefetchResult(n_records=n, n_bytes=n_bytes, capped=capped)
