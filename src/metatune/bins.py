"""nanoGPT `train.bin`/`val.bin`: every document's tokens followed by the end-of-text token, as one flat array
of uint16 (or uint32 when the vocabulary does not fit), which nanoGPT reads with `np.memmap`.

Streaming: documents are read in chunks of about `chunk_bytes` of text, tokenized by several threads and
appended to the file, so memory stays bounded whatever the corpus size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metatune.formats import document_text
from metatune.io import atomic_write_json
from metatune.progress import progress
from metatune.tokenizers import Tokenizer


@dataclass(frozen=True)
class BinSettings:
    workers: int = 2
    chunk_bytes: int = 4_000_000


def token_dtype(vocab_size: int) -> type[np.unsignedinteger]:
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def split_long(text: str, limit: int) -> list[str]:
    """A document longer than `limit` characters, cut at whitespace into pieces of at most `limit`, so that one
    enormous line cannot blow the memory bound. BPE merges never cross whitespace in GPT-2's pre-tokenizer
    anyway, so the tokens are the same as for the whole text (a cut inside a run of spaces may differ)."""
    pieces = []
    while len(text) > limit:
        cut = max(text.rfind("\n", 0, limit), text.rfind(" ", 0, limit))
        cut = cut if cut > 0 else limit  # no whitespace at all: cut anywhere
        pieces.append(text[:cut])
        text = text[cut:]
    pieces.append(text)
    return pieces


def iter_document_chunks(jsonl_path: str | Path, chunk_bytes: int) -> Iterator[list[tuple[str, bool]]]:
    """Lists of (text piece, ends a document) of about `chunk_bytes` of text each, read line by line."""
    chunk: list[tuple[str, bool]] = []
    size = 0
    with open(jsonl_path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            pieces = split_long(document_text(json.loads(line)), chunk_bytes)
            for i, piece in enumerate(pieces):
                chunk.append((piece, i == len(pieces) - 1))
                size += len(piece)
                if size >= chunk_bytes:
                    yield chunk
                    chunk, size = [], 0
    if chunk:
        yield chunk


def write_bin(jsonl_path: str | Path, bin_path: str | Path, tokenizer: Tokenizer, settings: BinSettings) -> dict:
    """Tokenize one split into `bin_path` (atomically); return its token and document counts and checksum."""
    bin_path = Path(bin_path)
    dtype = token_dtype(tokenizer.vocab_size)
    tmp = bin_path.with_name(f".{bin_path.name}.tmp")
    sha = hashlib.sha256()
    n_tokens = n_docs = 0
    with tmp.open("wb") as f:
        for chunk in progress(iter_document_chunks(jsonl_path, settings.chunk_bytes), f"tokenize {bin_path.name}",
                              "chunks"):
            ids = tokenizer.encode_batch([text for text, _ in chunk], num_threads=settings.workers)
            buf: list[int] = []
            for piece, (_, ends_document) in zip(ids, chunk):  # list.extend runs in C: faster than numpy here
                buf.extend(piece)
                if ends_document:
                    buf.append(tokenizer.eot)
                    n_docs += 1
            flat = np.array(buf, dtype=dtype)
            data = flat.tobytes()
            f.write(data)
            sha.update(data)
            n_tokens += flat.size
    tmp.replace(bin_path)
    return {"n_tokens": n_tokens, "n_docs": n_docs, "sha256": sha.hexdigest()}


def build_bins(split_paths: dict[str, str | Path], out_dir: str | Path, tokenizer: Tokenizer,
               settings: BinSettings, provenance: dict | None = None) -> dict:
    """Write `{split}.bin` for each given split and a `meta.json` describing them; return the meta."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = {s: write_bin(p, out_dir / f"{s}.bin", tokenizer, settings) for s, p in split_paths.items()}
    meta = {
        "tokenizer": tokenizer.name,
        "vocab_size": tokenizer.vocab_size,
        "eot": tokenizer.eot,
        "dtype": np.dtype(token_dtype(tokenizer.vocab_size)).name,
        "splits": splits,
        "provenance": provenance or {},
    }
    atomic_write_json(out_dir / "meta.json", meta)
    return meta
