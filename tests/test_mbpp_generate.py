"""Generation plumbing on CPU with a tiny randomly initialised GPT-2 and a tokenizer trained here (no hub)."""

from __future__ import annotations

import json
import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import SHARED  # noqa: E402 - the shared data (METATUNE_SHARED_DATA)
from metatune.mbpp import data, generate, prompts  # noqa: E402
from metatune.mbpp.samples import read_samples  # noqa: E402

PROBLEMS = data.load_local(SHARED / "mbpp" / "mbpp.jsonl")
TASKS = data.select_split(PROBLEMS, "test")[:5]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([p.text + "\n" + p.code + "\n".join(p.tests) for p in PROBLEMS[:60]], trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer GPT-2 with random weights, saved like a hub model (so load_model's real path runs)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-gpt2")
    tok = _tokenizer()
    cfg = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, n_positions=2048, vocab_size=len(tok),
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
    )
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter on the tiny model with non-zero B (so it changes the outputs), saved by peft."""
    peft = pytest.importorskip("peft")
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=32, target_modules=["c_attn"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1.0)
    path = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(path)
    return path


def _settings(model_dir, **kw):
    return generate.GenerationSettings(model=str(model_dir), max_new_tokens=12, batch_size=3, **kw)


def test_greedy_writes_one_sample_per_task(tiny_model_dir, tmp_path):
    out = tmp_path / "gen.jsonl"
    examples = prompts.few_shot_examples(PROBLEMS)
    assert generate.generate(TASKS, out, _settings(tiny_model_dir), examples) == len(TASKS)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["task_id"], r["sample"]) for r in rows] == [(p.task_id, 0) for p in TASKS]
    assert all(isinstance(r["completion"], str) for r in rows)


def test_left_padding_gives_the_same_greedy_text_as_unbatched(tiny_model_dir):
    settings = _settings(tiny_model_dir, prompt_format="sft")
    model, tok = generate.load_model(settings)
    assert tok.padding_side == "left" and tok.pad_token is not None
    texts = [prompts.sft_prompt(p) for p in TASKS[:3]]
    assert len({len(tok(t)["input_ids"]) for t in texts}) > 1  # the batch really needs padding
    batched = generate._decode(model, tok, texts, settings, 1, 0)
    alone = [generate._decode(model, tok, [t], settings, 1, 0)[0] for t in texts]
    assert batched == alone


def test_resume_after_a_stop_skips_what_is_written(tiny_model_dir, tmp_path):
    settings = _settings(tiny_model_dir, prompt_format="chat")
    model, tok = generate.load_model(settings)
    full = tmp_path / "full.jsonl"
    generate.generate(TASKS, full, settings, model=model, tokenizer=tok)
    # A run killed after two tasks, in the middle of writing the third line.
    lines = full.read_text().splitlines(keepends=True)
    stopped = tmp_path / "stopped.jsonl"
    stopped.write_text(lines[0] + lines[1] + lines[2][:10])
    assert generate.generate(TASKS, stopped, settings, model=model, tokenizer=tok) == len(TASKS) - 2
    assert stopped.read_text() == full.read_text()
    assert generate.generate(TASKS, stopped, settings, model=model, tokenizer=tok) == 0


def test_sampling_n_per_task_is_seeded_per_task(tiny_model_dir, tmp_path):
    settings = _settings(tiny_model_dir, prompt_format="sft", n_samples=3, temperature=1.0, seed=7)
    model, tok = generate.load_model(settings)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    generate.generate(TASKS[:2], a, settings, model=model, tokenizer=tok)
    generate.generate(TASKS[1:2], b, settings, model=model, tokenizer=tok)  # task alone: same samples
    sa, sb = read_samples(a), read_samples(b)
    assert sorted((s.task_id, s.sample) for s in sa) == [(t.task_id, i) for t in TASKS[:2] for i in range(3)]
    assert [s.completion for s in sa if s.task_id == TASKS[1].task_id] == [s.completion for s in sb]
    assert len({s.completion for s in sa}) > 1  # sampling, not greedy


def test_adapter_is_loaded_and_changes_the_model(tiny_model_dir, adapter_dir):
    base, tok = generate.load_model(_settings(tiny_model_dir))
    tuned, _ = generate.load_model(_settings(tiny_model_dir, adapter=str(adapter_dir)))
    assert type(tuned).__name__ == "PeftModel"
    ids = tok(["def f(x):"], return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(base(**ids).logits, tuned(**ids).logits)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="greedy"):
        generate.GenerationSettings(model="m", n_samples=4)
    with pytest.raises(ValueError, match="prompt_format"):
        generate.GenerationSettings(model="m", prompt_format="nope")
