"""Problems, prompts and the split of asserts into untrusted expressions and trusted checks (no sandbox)."""

from __future__ import annotations

import builtins
import json

import pytest

from metatune.io import DataError
from metatune.formats import render_prompt
from metatune.mbpp import checks, data, prompts

MBPP = "/work/shared/data/mbpp/mbpp.jsonl"
SANITIZED = "/work/shared/data/mbpp/sanitized-mbpp.json"
TRUSTED = set(dir(builtins))


def test_local_files_load_with_the_test_split_of_500():
    full = data.load_local(MBPP)
    assert len(full) == 974 and [p.task_id for p in data.select_split(full, "test")] == list(range(11, 511))
    sanitized = data.load_local(SANITIZED)
    assert len(sanitized) == 427 and sanitized[0].test_imports == () and sanitized[0].text
    assert any(p.test_imports == ("import math",) for p in sanitized)
    assert data.by_id(full)[367].setup_code.startswith("root = Node(1)")


def test_bad_input_names_file_line_and_task(tmp_path):
    bad = tmp_path / "mbpp.jsonl"
    good = json.dumps({"task_id": 1, "text": "t", "code": "c", "test_list": ["assert f() == 1"]})
    bad.write_text(good + "\n" + json.dumps({"task_id": 2, "text": "t", "code": "c"}) + "\n")
    with pytest.raises(DataError, match=r"mbpp.jsonl:2: missing field 'test_list'"):
        data.load_local(bad)
    bad.write_text(good + "\n{not json\n")
    with pytest.raises(DataError, match=r"mbpp.jsonl:2: invalid JSON"):
        data.load_local(bad)
    bad.write_text(good + "\n" + good + "\n")
    with pytest.raises(DataError, match="task_id 1 appears twice"):
        data.load_local(bad)
    with pytest.raises(DataError, match="unknown MBPP split"):
        data.select_split([], "dev")
    with pytest.raises(DataError, match="unknown config 'tiny'"):  # checked before the hub is reached
        data.load_problems("hub:tiny")


def test_few_shot_prompt_is_the_original_format():
    problems = data.load_local(MBPP)
    examples = prompts.few_shot_examples(problems)
    assert [e.task_id for e in examples] == [2, 3, 4]
    task = data.by_id(problems)[11]
    text = prompts.few_shot_prompt(task, examples)
    assert text.startswith(
        "You are an expert Python programmer, and here is your task: Write a function to find the similar "
        "elements from the given two tuple lists. Your code should pass these tests:\n\n"
        "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n"
    )
    assert text.count("[BEGIN]") == 4 and text.count("[DONE]") == 3
    assert text.endswith(f"{task.tests[-1].strip()}\n[BEGIN]\n")
    assert f"[BEGIN]\n{examples[0].code}\n[DONE]\n" in text


def test_chat_and_sft_prompts():
    task = data.load_local(MBPP)[10]

    class Tok:  # the one method chat_prompt needs, rendering like a simple chat template would
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert tokenize is False and add_generation_prompt is True
            return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"

    chat = prompts.chat_prompt(task, Tok())
    assert chat.startswith(f"<user>{task.text}\n") and chat.endswith("code block.</user><assistant>")
    sft = prompts.sft_prompt(task)
    assert sft.startswith("### Instruction:\n" + task.text) and sft.endswith("\n\n### Response:\n")
    # the same text the SFT trainers and the bins render a normalized MBPP record with
    record_prompt = f"{task.text}\nYour code should pass these tests:\n\n" + "\n".join(task.tests)
    assert sft == render_prompt(record_prompt)


@pytest.mark.parametrize(
    "generation, code",
    [
        ("def f():\n    return 1\n[DONE]\nYou are an expert", "def f():\n    return 1\n"),
        ("Sure:\n```python\ndef f():\n    return 1\n```\nThis works.", "def f():\n    return 1\n"),
        ("```\ndef f(): return 2\n```", "def f(): return 2\n"),
        ("```py\ndef f(): return 3", "def f(): return 3\n"),  # cut at a stop sequence: fence never closed
        ("[BEGIN]\ndef f(): return 4\n[DONE]", "def f(): return 4\n"),
        ("def f(): return 5", "def f(): return 5\n"),
    ],
)
def test_extract_code(generation, code):
    assert prompts.extract_code(generation) == code


def test_truncate_at_the_earliest_stop():
    assert prompts.truncate_at_stop("a\n```\nb[DONE]c", ("[DONE]", "\n```\n")) == "a"
    assert prompts.truncate_at_stop("abc", ("[DONE]",)) == "abc"


@pytest.mark.parametrize(
    "line, exprs, check",
    [
        ("assert f(1, [2]) == (3, 4)", ["f(1, [2])"], "_mbpp_v0 == (3, 4)"),
        ("assert math.isclose(f(10), 41.8, rel_tol=0.001)", ["f(10)"], "math.isclose(_mbpp_v0, 41.8, rel_tol=0.001)"),
        ("assert set(f((3, 4))) == set((4, 5))", ["f((3, 4))"], "set(_mbpp_v0) == set((4, 5))"),
        ("assert not f('x')", ["f('x')"], "not _mbpp_v0"),
        ("assert f('x')", ["f('x')"], "_mbpp_v0"),
        ("assert f(root) == g(2)", ["f(root)", "g(2)"], "_mbpp_v0 == _mbpp_v1"),
        ("assert sorted(f(x)) == [1, 2]", ["f(x)"], "sorted(_mbpp_v0) == [1, 2]"),
        ("assert f(2) == -1", ["f(2)"], "_mbpp_v0 == -1"),
        ("assert f([x * 2 for x in range(3)]) == 1", ["f([x * 2 for x in range(3)])"], "_mbpp_v0 == 1"),
        ("assert [f(x) for x in range(3)] == [0, 1, 2]", ["[f(x) for x in range(3)]"], "_mbpp_v0 == [0, 1, 2]"),
    ],
)
def test_split_shapes(line, exprs, check):
    trusted = TRUSTED | {"math"}
    split = checks.split_test(line, trusted)
    assert list(split.exprs) == exprs and split.check == check


@pytest.mark.parametrize(
    "line, message",
    [
        ("assert all(f(x) for x in range(3))", "bound inside the test"),
        ("x = f(1)", "not a single assert"),
        ("assert f(1) == 1; assert f(2) == 2", "not a single assert"),
        ("assert f(1 ==", "not valid Python"),
    ],
)
def test_unsplittable_tests_are_refused(line, message):
    with pytest.raises(checks.UnsupportedTest, match=message):
        checks.split_test(line, TRUSTED)


def test_a_builtin_the_completion_redefines_is_untrusted():
    """MBPP task 126 names its function `sum`: the call must run in the sandbox, not as the builtin."""
    p = data.by_id(data.load_local(MBPP))[126]
    split = checks.split_task(p, p.code)
    assert split.tests[0].exprs == ("sum(10, 15)",)
    assert checks.split_task(p, "def other(): pass").tests[0].exprs == ()  # builtin sum: trusted side


def test_every_mbpp_assert_splits_with_its_reference_solution():
    for problem in data.load_local(MBPP) + data.load_local(SANITIZED):
        split = checks.split_task(problem, problem.code)
        assert all(t.exprs for t in split.tests), problem.task_id  # each test runs the completion
