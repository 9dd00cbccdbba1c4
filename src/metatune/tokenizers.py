"""Tokenizers for the bins and the metafeatures: GPT-2 BPE (tiktoken), raw UTF-8 bytes, or any HF tokenizer.

All share one small interface: `name`, `vocab_size`, `eot` (the end-of-text id that separates documents) and
`encode_batch(texts)`, which may use several threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class UnknownTokenizer(ValueError):
    pass


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eot: int

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]: ...


@dataclass
class TiktokenTokenizer:
    """GPT-2's BPE. tiktoken's `r50k_base` has GPT-2's ranks, split pattern and end-of-text id (50256); unlike
    `get_encoding("gpt2")` it reads a cached rank file offline (TIKTOKEN_CACHE_DIR), and `bpe_file` skips even
    the cache."""

    bpe_file: str | None = None
    name: str = "gpt2"

    def __post_init__(self) -> None:
        import tiktoken

        if self.bpe_file:
            from tiktoken.load import load_tiktoken_bpe
            from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

            self.encoding = tiktoken.Encoding(
                name="r50k_base", pat_str=r50k_pat_str, mergeable_ranks=load_tiktoken_bpe(self.bpe_file),
                special_tokens={ENDOFTEXT: 50256}, explicit_n_vocab=50257,
            )
        else:
            self.encoding = tiktoken.get_encoding("r50k_base")
        self.eot = self.encoding.eot_token
        self.vocab_size = self.encoding.n_vocab

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        # tiktoken's Rust core releases the GIL, so threads give real parallelism without copying text to workers.
        return self.encoding.encode_ordinary_batch(texts, num_threads=num_threads)


@dataclass
class ByteTokenizer:
    """UTF-8 bytes, 0-255, and 256 as end-of-text: no vocabulary file, tiny embeddings (the CPU demo's choice)."""

    name: str = "bytes"
    vocab_size: int = 257
    eot: int = 256

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]


@dataclass
class HFTokenizer:
    """Any Hugging Face tokenizer by hub name or local path; documents end with its EOS token."""

    path: str
    name: str = ""

    def __post_init__(self) -> None:
        from transformers import AutoTokenizer

        self.name = f"hf:{self.path}"
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if self.tokenizer.eos_token_id is None:
            raise UnknownTokenizer(f"tokenizer.name: {self.name} has no EOS token to separate documents")
        self.eot = self.tokenizer.eos_token_id
        self.vocab_size = len(self.tokenizer)

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]


def get_tokenizer(name: str, bpe_file: str | None = None) -> Tokenizer:
    if name == "gpt2":
        return TiktokenTokenizer(bpe_file=bpe_file)
    if name == "bytes":
        return ByteTokenizer()
    if name.startswith("hf:"):
        try:
            return HFTokenizer(name.removeprefix("hf:"))
        except (OSError, ValueError) as e:
            raise UnknownTokenizer(f"tokenizer.name: cannot load {name!r}: {e}") from None
    raise UnknownTokenizer(f"tokenizer.name: unknown tokenizer {name!r} (gpt2, bytes or hf:<name or path>)")
