"""A tiny GPT-2-config model trained from scratch on the datasets' train.bin files: the base model of the offline
demo and the tests (`training.nanogpt.base_model: pretrain`), so nothing is downloaded. Its vocabulary is the
bins' (257 for the `bytes` tokenizer); every step mixes windows of all the datasets."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from metatune.io import read_json
from metatune.trainers.nanogpt_lora import lr_at, n_tokens, windows


@dataclass(frozen=True)
class PretrainSettings:
    """The `training.pretrain` config section (config/schemas/config.schema.yaml documents each key)."""

    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 256
    steps: int = 300
    batch_size: int = 16
    seq_len: int = 128
    learning_rate: float = 3e-3
    seed: int = 0

    @classmethod
    def from_dict(cls, section: dict) -> PretrainSettings:
        return cls(**{f.name: section[f.name] for f in fields(cls) if f.name in section})


def bins_vocab(train_bins: list[str]) -> tuple[int, int]:
    """(vocab_size, eot) shared by all the bins; a mix of tokenizers is an error naming the odd one out."""
    metas = {p: read_json(Path(p).parent / "meta.json") for p in train_bins}
    first, meta = next(iter(metas.items()))
    for p, m in metas.items():
        if (m["vocab_size"], m["eot"]) != (meta["vocab_size"], meta["eot"]):
            raise ValueError(f"{p}: vocabulary {m['vocab_size']} differs from {first}'s {meta['vocab_size']}")
    return meta["vocab_size"], meta["eot"]


def pretrain(train_bins: list[str], out_dir: str | Path, s: PretrainSettings) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(s.seed)
    vocab, eot = bins_vocab(train_bins)
    config = GPT2Config(vocab_size=vocab, n_positions=s.block_size, n_embd=s.n_embd, n_layer=s.n_layer,
                        n_head=s.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=eot, eos_token_id=eot)
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.learning_rate, betas=(0.9, 0.95), weight_decay=0.1)
    sizes = [n_tokens(p, s.seq_len) for p in train_bins]
    gen = torch.Generator().manual_seed(s.seed)
    start = time.monotonic()
    for step in range(s.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, s.steps, s.learning_rate, warmup_ratio=0.05, min_lr_ratio=0.1)
        # Each sequence comes from a dataset drawn uniformly, so small datasets weigh as much as large ones.
        which = torch.randint(len(train_bins), (s.batch_size,), generator=gen).numpy()
        xs, ys = [], []
        for i, path in enumerate(train_bins):
            k = int((which == i).sum())
            if k:
                x, y = windows(path, torch.randint(sizes[i] - s.seq_len, (k,), generator=gen).numpy(), s.seq_len)
                xs.append(x)
                ys.append(y)
        logits = model(input_ids=torch.cat(xs)).logits
        loss = F.cross_entropy(logits.flatten(0, 1), torch.cat(ys).flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == s.steps - 1:
            print(f"step {step}: loss {loss.item():.4f} ({time.monotonic() - start:.1f} s)")
    model.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    return {"final_loss": loss.item(), "n_params": n_params, "wall_s": time.monotonic() - start}

