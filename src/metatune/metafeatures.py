"""Dataset metafeatures: the optimizer's cheap, deterministic, comparable view of a dataset.

Counts (documents, bytes) cover the whole train split; everything measured on tokens reads at most
`sample_bytes` of it, from the start, so the cost is bounded and the result deterministic. The table of names,
meanings and formulas is docs/metafeatures.md.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from metatune.formats import document_text
from metatune.io import read_json
from metatune.tokenizers import Tokenizer

# A line "looks like code" when it has the shape of a statement in a C-like or Python-like language.
CODE_LINE = re.compile(
    r"""^\s*(def |class |import |from \S+ import |return\b|if .*:$|for .*:$|while .*:$|elif |else:|try:|except\b|
    \#include|public |private |static |function\b|var |let |const |\}|\{|@\w+)
    |[;{]\s*$|^\s*\w[\w.\[\]]*\s*(=|\+=|-=)\s*\S|\w\(.*\)\s*$""",
    re.VERBOSE,
)


def _percentile(values: list[int], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def compute(train_jsonl: str | Path, stats_json: str | Path, tokenizer: Tokenizer, sample_bytes: int) -> dict:
    n_docs = n_bytes = 0
    sample: list[dict] = []
    sample_size = 0
    with open(train_jsonl, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            size = len(document_text(record).encode("utf-8"))
            n_docs += 1
            n_bytes += size
            if sample_size < sample_bytes:
                sample.append(record)
                sample_size += size
    # One enormous document must not make the sample enormous: cut the text samples at the byte budget.
    texts = []
    budget = sample_bytes
    for r in sample:
        texts.append(document_text(r)[:budget])
        budget -= len(texts[-1])
    sample_size = sum(len(t.encode("utf-8")) for t in texts)
    ids = tokenizer.encode_batch(texts, num_threads=2)
    doc_lens = [len(x) for x in ids]
    counts = Counter(t for doc in ids for t in doc)
    n_sample_tokens = sum(doc_lens)
    probs = np.array(list(counts.values()), dtype=np.float64) / max(1, n_sample_tokens)
    joined = "\n".join(texts)
    raw = joined.encode("utf-8")
    lines = [ln for ln in joined.splitlines() if ln.strip()]
    instruction = bool(sample) and "prompt" in sample[0]
    stats = read_json(stats_json)

    features = {
        "n_documents": n_docs,
        "n_bytes": n_bytes,
        "n_tokens": round(n_bytes * n_sample_tokens / max(1, sample_size)),
        "log10_tokens": math.log10(max(1.0, n_bytes * n_sample_tokens / max(1, sample_size))),
        "doc_len_mean": float(np.mean(doc_lens)) if doc_lens else 0.0,
        "doc_len_median": _percentile(doc_lens, 50),
        "doc_len_p95": _percentile(doc_lens, 95),
        "token_entropy": float(-(probs * np.log2(probs)).sum()) if counts else 0.0,
        "type_token_ratio": len(counts) / max(1, n_sample_tokens),
        "vocab_coverage": len(counts) / tokenizer.vocab_size,
        "compression_ratio": len(zlib.compress(raw, 6)) / max(1, len(raw)),
        "code_line_share": sum(bool(CODE_LINE.search(ln)) for ln in lines) / max(1, len(lines)),
        "non_ascii_share": sum(ch > "\x7f" for ch in joined) / max(1, len(joined)),
        "duplicate_rate": float(stats["duplicate_rate"]),
        "is_instruction": float(instruction),
        "prompt_len_mean": 0.0,
        "prompt_len_p95": 0.0,
        "completion_len_mean": 0.0,
        "completion_len_p95": 0.0,
    }
    if instruction:
        prompts = tokenizer.encode_batch([r["prompt"] for r in sample], num_threads=2)
        completions = tokenizer.encode_batch([r["completion"] for r in sample], num_threads=2)
        p_lens, c_lens = [len(x) for x in prompts], [len(x) for x in completions]
        features.update(
            prompt_len_mean=float(np.mean(p_lens)), prompt_len_p95=_percentile(p_lens, 95),
            completion_len_mean=float(np.mean(c_lens)), completion_len_p95=_percentile(c_lens, 95),
        )
    return features
