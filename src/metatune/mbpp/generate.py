"""Generate MBPP completions with a transformers causal LM, optionally with a PEFT (LoRA) adapter.

Greedy decoding (temperature 0, one sample) for pass@1, or n sampled completions (temperature, top_p) for
pass@k. Every finished completion is appended to the samples JSONL at once (samples.py), so a stopped run
restarted with the same command skips each (task_id, sample) already on disk and goes on from there.

Sampling is seeded per task (seed + task_id) and a task's samples are drawn in one call, so a task's samples
do not depend on which other tasks shared its batch, nor on whether the run was resumed. Greedy decoding
batches several tasks together with left padding (a causal LM continues from the right end).

This is the only module of metatune.mbpp that imports torch/transformers/peft, and only when it runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from metatune.mbpp.data import Problem
from metatune.mbpp.prompts import FORMATS, build_prompt, extract_code, truncate_at_stop
from metatune.mbpp.samples import Sample, append_sample, read_samples
from metatune.progress import progress


@dataclass(frozen=True)
class GenerationSettings:
    model: str  # a hub id or a local directory
    adapter: str | None = None  # a PEFT adapter directory
    prompt_format: str = "fewshot"  # fewshot | chat | sft (prompts.FORMATS)
    n_samples: int = 1
    temperature: float = 0.0  # 0: greedy
    top_p: float = 0.95
    seed: int = 0
    max_new_tokens: int = 512
    batch_size: int = 8  # tasks per greedy batch
    load_in_4bit: bool = False  # nf4 via bitsandbytes; ignored (with a warning) without CUDA

    def __post_init__(self):
        if self.prompt_format not in FORMATS:
            raise ValueError(f"prompt_format: unknown {self.prompt_format!r}; expected one of {sorted(FORMATS)}")
        if self.n_samples < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("n_samples, batch_size and max_new_tokens must be at least 1")
        if self.temperature == 0 and self.n_samples > 1:
            raise ValueError("greedy decoding (temperature 0) gives one sample per task; set a temperature")


def load_model(settings: GenerationSettings):
    """(model, tokenizer) ready for batched generation: eval mode, left padding, a pad token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    kwargs: dict = {}
    if settings.load_in_4bit and torch.cuda.is_available():
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["device_map"] = "auto"
    elif settings.load_in_4bit:
        print("generate: load_in_4bit needs CUDA; loading the model unquantized", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(settings.model)
    model = AutoModelForCausalLM.from_pretrained(settings.model, **kwargs)
    if settings.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, settings.adapter)
    if "device_map" not in kwargs and torch.cuda.is_available():
        model = model.to("cuda")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def _done(out_path: Path) -> set[tuple[int, int]]:
    """(task_id, sample) pairs already written. A last line cut short by a kill is dropped first."""
    if not out_path.exists():
        return set()
    data = out_path.read_bytes()
    if data and not data.endswith(b"\n"):
        with out_path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
    return {(s.task_id, s.sample) for s in read_samples(out_path)}


def _decode(model, tokenizer, prompts: list[str], settings: GenerationSettings, n: int, seed: int) -> list[str]:
    """Generated text (prompt excluded) for each prompt, n per prompt, in order, cut at the stop sequences."""
    import torch

    stops = FORMATS[settings.prompt_format].stop
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    sampling = settings.temperature > 0
    kwargs = dict(do_sample=sampling, num_return_sequences=n, max_new_tokens=settings.max_new_tokens)
    if sampling:
        torch.manual_seed(seed)
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
    with torch.no_grad():
        out = model.generate(
            **enc,
            **kwargs,
            pad_token_id=tokenizer.pad_token_id,
            stop_strings=list(stops),
            tokenizer=tokenizer,
        )
    new_tokens = out[:, enc["input_ids"].shape[1] :]
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [truncate_at_stop(t, stops) for t in texts]


def generate(
    problems: list[Problem],
    out_path: str | Path,
    settings: GenerationSettings,
    examples: list[Problem] | None = None,
    model=None,
    tokenizer=None,
) -> int:
    """Append the missing completions of `problems` to `out_path`; returns how many were written.
    `model`/`tokenizer` default to load_model(settings); `examples` are the few-shot examples."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = _done(out_path)
    todo = [p for p in problems if any((p.task_id, i) not in done for i in range(settings.n_samples))]
    if not todo:
        return 0
    if model is None or tokenizer is None:
        model, tokenizer = load_model(settings)
    written = 0
    with out_path.open("a", encoding="utf-8") as f:
        if settings.temperature > 0:  # one call per task, seeded by the task: see the module docstring
            batches = [[p] for p in todo]
        else:
            batches = [todo[i : i + settings.batch_size] for i in range(0, len(todo), settings.batch_size)]
        for batch in progress(batches, f"generate {out_path.name}", "batches"):
            prompts = [build_prompt(settings.prompt_format, p, examples, tokenizer) for p in batch]
            texts = _decode(model, tokenizer, prompts, settings, settings.n_samples, settings.seed + batch[0].task_id)
            for j, text in enumerate(texts):
                p, index = batch[j // settings.n_samples], j % settings.n_samples
                if (p.task_id, index) not in done:
                    append_sample(f, Sample(p.task_id, extract_code(text), index))
                    written += 1
    return written

