"""How normalized records become training text. One place, so the trainers, the bins and the MBPP prompts
all see instruction data in the same format."""

from __future__ import annotations

SFT_PROMPT_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"


def render_prompt(prompt: str) -> str:
    return SFT_PROMPT_TEMPLATE.format(prompt=prompt)


def document_text(record: dict) -> str:
    """The text a language model trains on for one normalized record (text or prompt/completion)."""
    if "text" in record:
        return record["text"]
    return render_prompt(record["prompt"]) + record["completion"]
