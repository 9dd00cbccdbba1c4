"""Prompt formats for MBPP, their stop sequences, and getting the code back out of a generation.

fewshot  the original 3-shot prompt of Austin et al. 2021 (tasks 2, 3, 4 as examples, [BEGIN]/[DONE]);
         for base models.
chat     a zero-shot instruction through the tokenizer's own chat template; for instruction-tuned models.
sft      the completion format the workflow's LoRA adapters are trained on, so an adapter is evaluated on the
         prompt shape it learned (`metatune.formats.render_prompt`, the one definition of that template).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from metatune.formats import render_prompt
from metatune.io import DataError
from metatune.mbpp.data import Problem

FEW_SHOT_IDS = (2, 3, 4)
_TASK = ("You are an expert Python programmer, and here is your task: {text} "
         "Your code should pass these tests:\n\n{tests}\n")
_INSTRUCTION = "{text}\nYour code should pass these tests:\n\n{tests}\n"
_CHAT_SUFFIX = "\nWrite the Python code in a single ```python code block."


@dataclass(frozen=True)
class PromptFormat:
    name: str
    stop: tuple[str, ...]  # generation ends at the first of these (it is cut off, not kept)


FORMATS = {
    "fewshot": PromptFormat("fewshot", ("[DONE]", "\n[BEGIN]", "\nYou are an expert Python programmer")),
    # A chat model closes its code fence and then explains; the fence is where the code ends.
    "chat": PromptFormat("chat", ("\n```\n",)),
    "sft": PromptFormat("sft", ("\n### Instruction", "\n```\n")),
}


def _tests(p: Problem) -> str:
    return "\n".join(t.strip() for t in p.tests)


def few_shot_prompt(problem: Problem, examples: list[Problem]) -> str:
    """The 3-shot prompt: each example with its solution between [BEGIN] and [DONE], then the task, open."""
    shots = [_TASK.format(text=e.text, tests=_tests(e)) + f"[BEGIN]\n{e.code}\n[DONE]\n" for e in examples]
    return "".join(shots) + _TASK.format(text=problem.text, tests=_tests(problem)) + "[BEGIN]\n"


def few_shot_examples(problems: list[Problem]) -> list[Problem]:
    """Tasks 2, 3 and 4 from a loaded problem list (they are in the `prompt` split, ids 1-10)."""
    by_id = {p.task_id: p for p in problems}
    missing = [i for i in FEW_SHOT_IDS if i not in by_id]
    if missing:
        raise DataError(f"few-shot examples need MBPP tasks {FEW_SHOT_IDS}; task {missing[0]} is not loaded")
    return [by_id[i] for i in FEW_SHOT_IDS]


def chat_prompt(problem: Problem, tokenizer) -> str:
    """A zero-shot instruction rendered by `tokenizer.apply_chat_template` (anything with that method)."""
    content = _INSTRUCTION.format(text=problem.text, tests=_tests(problem)) + _CHAT_SUFFIX
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )


def sft_prompt(problem: Problem) -> str:
    return render_prompt(_INSTRUCTION.format(text=problem.text, tests=_tests(problem)).rstrip())


def build_prompt(fmt: str, problem: Problem, examples: list[Problem] | None = None, tokenizer=None) -> str:
    if fmt == "fewshot":
        if examples is None:
            raise ValueError("the fewshot format needs its examples (few_shot_examples)")
        return few_shot_prompt(problem, examples)
    if fmt == "chat":
        if tokenizer is None:
            raise ValueError("the chat format needs a tokenizer with a chat template")
        return chat_prompt(problem, tokenizer)
    if fmt == "sft":
        return sft_prompt(problem)
    raise ValueError(f"unknown prompt format {fmt!r}; expected one of {sorted(FORMATS)}")


def truncate_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """`text` up to the earliest stop sequence (which is dropped)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:\n```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(generation: str) -> str:
    """The program in a generation: the first fenced block if there is one, else what lies between [BEGIN]
    and [DONE] (or before [DONE]: a few-shot generation starts right after the prompt's [BEGIN]), else all."""
    m = _FENCE.search(generation)
    if m:
        return m.group(1).rstrip() + "\n"
    text = generation
    if "[BEGIN]" in text:
        text = text.split("[BEGIN]", 1)[1]
    text = text.split("[DONE]", 1)[0]
    return text.strip("\n").rstrip() + "\n"
