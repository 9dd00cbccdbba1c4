"""nanoGPT bin prep: the project's streaming, threaded tokenizer against nanoGPT's openwebtext `prepare.py`
recipe (per-document `encode_ordinary` mapped with `datasets.map(num_proc=2)`, then concatenated into a
memmap), on the same corpus, in one run. Prints tokens/s of both, their ratio, and the peak RSS of both, and
checks that both wrote the same tokens. Then the project's peak RSS on a 200 MB corpus.

Targets (issue): at least 1.5x the baseline's tokens/s on 2 cores; peak RSS under 500 MB at 50 and 200 MB.
Usage: python benchmarks/bench_bins.py [--mb 50] [--large-mb 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("METATUNE_SHARED_DATA", ROOT.parent / "shared" / "data"))
BPE = SHARED / "gpt2_tokenizer" / "gpt2.tiktoken"

OURS = """
import sys
from metatune.bins import BinSettings, write_bin
from metatune.tokenizers import get_tokenizer
tok = get_tokenizer("gpt2", bpe_file=sys.argv[3])
print(write_bin(sys.argv[1], sys.argv[2], tok, BinSettings(workers=2))["n_tokens"])
"""

# nanoGPT's data/openwebtext/prepare.py, pointed at a local JSONL instead of the hub.
BASELINE = """
import sys
import numpy as np
import tiktoken
from datasets import load_dataset
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import r50k_pat_str

enc = tiktoken.Encoding(name="r50k_base", pat_str=r50k_pat_str, mergeable_ranks=load_tiktoken_bpe(sys.argv[3]),
                        special_tokens={"<|endoftext|>": 50256})

def process(example):
    ids = enc.encode_ordinary(example["text"])
    ids.append(enc.eot_token)
    return {"ids": ids, "len": len(ids)}

ds = load_dataset("json", data_files=sys.argv[1], split="train", cache_dir=sys.argv[4])
tokenized = ds.map(process, remove_columns=["text"], desc="tokenizing", num_proc=2)
arr_len = np.sum(tokenized["len"], dtype=np.uint64)
arr = np.memmap(sys.argv[2], dtype=np.uint16, mode="w+", shape=(arr_len,))
total_batches = 1024
idx = 0
for batch_idx in range(total_batches):
    batch = tokenized.shard(num_shards=total_batches, index=batch_idx, contiguous=True).with_format("numpy")
    arr_batch = np.concatenate(batch["ids"])
    arr[idx : idx + len(arr_batch)] = arr_batch
    idx += len(arr_batch)
arr.flush()
print(int(arr_len))
"""


def build_corpus(path: Path, megabytes: int) -> int:
    """JSONL documents (paragraphs of the shared English and Spanish texts), repeated up to the size."""
    paragraphs = []
    for name in ("tinyshakespeare/input.txt", "quijote/quijote.txt"):
        text = (SHARED / name).read_text(encoding="utf-8").lstrip("\ufeff")
        paragraphs += [p for p in text.split("\n\n") if p.strip()]
    lines = [json.dumps({"text": p}, ensure_ascii=False) + "\n" for p in paragraphs]
    size, target = 0, megabytes * 1_000_000
    with path.open("w", encoding="utf-8") as f:
        while size < target:
            for line in lines:
                f.write(line)
                size += len(line.encode())
                if size >= target:
                    break
    return size


def run(code: str, *args: str) -> tuple[float, int, int]:
    """Wall seconds, peak RSS in MB (of the largest process of the run: the child or one of its workers), and
    the tokens it printed. wait4 gives this child's own usage, not that of earlier runs."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(f"benchmark child failed with {status}")
    return time.perf_counter() - start, usage.ru_maxrss // 1024, int(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--large-mb", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.jsonl"
        size = build_corpus(corpus, args.mb)
        print(f"corpus: {size / 1e6:.0f} MB of JSONL")
        t_ours, rss_ours, n_ours = run(OURS, str(corpus), str(tmp / "ours.bin"), str(BPE))
        t_base, rss_base, n_base = run(BASELINE, str(corpus), str(tmp / "base.bin"), str(BPE), str(tmp / "cache"))
        same = (tmp / "ours.bin").read_bytes() == (tmp / "base.bin").read_bytes()
        print(f"metatune bins : {n_ours / t_ours / 1e6:6.2f} M tokens/s ({t_ours:.1f} s), peak RSS {rss_ours} MB")
        print(f"nanoGPT recipe: {n_base / t_base / 1e6:6.2f} M tokens/s ({t_base:.1f} s), peak RSS {rss_base} MB")
        print(f"speed ratio   : {t_base / t_ours:.2f}x (target >= 1.5x); same tokens: {same} ({n_ours} tokens)")
        corpus.unlink()
        if args.large_mb:
            size = build_corpus(corpus, args.large_mb)
            t_large, rss_large, n_large = run(OURS, str(corpus), str(tmp / "large.bin"), str(BPE))
            print(f"metatune bins at {size / 1e6:.0f} MB: {n_large / t_large / 1e6:.2f} M tokens/s,"
                  f" peak RSS {rss_large} MB (target < 500 MB)")


if __name__ == "__main__":
    main()
