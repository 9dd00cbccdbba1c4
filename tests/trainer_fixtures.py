"""Fixtures of the trainer tests (imported by them; main's conftest.py stays theirs): real data from
../shared/data, tiny models built offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never reach the hub
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def text_bins(out: Path, text: str) -> Path:
    """Paragraphs as documents, the last 10% for val, as nanoGPT bins with the bytes tokenizer; returns the folder."""
    from metatune import bins
    from metatune.tokenizers import ByteTokenizer

    paragraphs = text.split("\n\n")
    cut = int(len(paragraphs) * 0.9)
    for split, docs in (("train", paragraphs[:cut]), ("val", paragraphs[cut:])):
        (out / f"{split}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    bins.build_bins({s: out / f"{s}.jsonl" for s in ("train", "val")}, out / "bins", ByteTokenizer(), bins.BinSettings())
    return out / "bins"


@pytest.fixture(scope="session")
def shakespeare_bins(tmp_path_factory) -> Path:
    text = (SHARED_DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    return text_bins(tmp_path_factory.mktemp("shakespeare"), text)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny GPT-2-config model pretrained (what rule pretrain_base does) on Spanish prose, Don Quijote, so
    that fine-tuning it on Shakespeare's English has something to learn within a few steps."""
    from metatune.trainers.pretrain import PretrainSettings, pretrain

    text = (SHARED_DATA / "quijote" / "quijote.txt").read_text(encoding="utf-8-sig")
    bins = text_bins(tmp_path_factory.mktemp("quijote"), text)
    out = tmp_path_factory.mktemp("base_model")
    pretrain([str(bins / "train.bin")], out,
             PretrainSettings(n_layer=2, n_head=2, n_embd=64, block_size=64, steps=100, batch_size=16, seq_len=64))
    return out
