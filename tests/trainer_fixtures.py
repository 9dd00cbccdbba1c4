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
    bins.build_bins({s: out / f"{s}.jsonl" for s in ("train", "val")}, out / "bins", ByteTokenizer(),
                    bins.BinSettings())
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


@pytest.fixture(scope="session")
def sft_data(tmp_path_factory) -> Path:
    """The first CodeAlpaca records, normalized as the workflow does (alpaca template), as train/val JSONL."""
    from metatune.normalize import DatasetFormat, normalize_record

    out = tmp_path_factory.mktemp("codealpaca")
    raw = json.loads((SHARED_DATA / "codealpaca" / "code_alpaca_2k.json").read_text(encoding="utf-8"))
    fmt = DatasetFormat("codealpaca", "instruction", "alpaca", {})
    records = [normalize_record(r, fmt, f"record {i}") for i, r in enumerate(raw[:40])]
    for split, part in (("train", records[:32]), ("val", records[32:])):
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    return out


def build_tiny_llama(texts: list[str], out: Path, max_positions: int = 256) -> Path:
    """A random 2-layer Llama with a 512-token byte-level BPE trained on `texts`, saved to `out`."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=512, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=max_positions,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama(sft_data, tmp_path_factory) -> Path:
    """The tiny Llama, its tokenizer trained on the same records."""
    texts = [json.loads(line)["prompt"] + json.loads(line)["completion"]
             for line in (sft_data / "train.jsonl").read_text().splitlines()]
    return build_tiny_llama(texts, tmp_path_factory.mktemp("tiny_llama"))
