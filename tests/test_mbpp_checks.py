"""Problems, prompts, the split of asserts into cuts and trusted checks, and the wire format (no sandbox)."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metatune.formats import render_prompt
from metatune.io import DataError
from metatune.mbpp import checks, data, prompts, wire


@pytest.fixture(scope="module")
def full(shared):
    return data.load_local(shared / "mbpp" / "mbpp.jsonl")


@pytest.fixture(scope="module")
def sanitized(shared):
    return data.load_local(shared / "mbpp" / "sanitized-mbpp.json")


def test_local_files_load_with_the_test_split_of_500(full, sanitized):
    assert len(full) == 974 and [p.task_id for p in data.select_split(full, "test")] == list(range(11, 511))
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


def test_few_shot_prompt_is_the_original_format(full):
    problems = full
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


def test_chat_and_sft_prompts(full):
    task = full[10]

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


THEIRS = frozenset({"f", "g", "root", "Pair"})


@pytest.mark.parametrize(
    "line, cuts, check",
    [
        ("assert f(1, [2]) == (3, 4)", [("f(1, [2])", False)], "_mbpp_v0 == (3, 4)"),
        ("assert math.isclose(f(10), 41.8, rel_tol=0.001)", [("f(10)", False)],
         "math.isclose(_mbpp_v0, 41.8, rel_tol=0.001)"),
        ("assert set(f((3, 4))) == set((4, 5))", [("f((3, 4))", False)], "set(_mbpp_v0) == set((4, 5))"),
        ("assert not f('x')", [("f('x')", True)], "not _mbpp_v0"),
        ("assert f('x')", [("f('x')", True)], "_mbpp_v0"),
        ("assert f(1) and not g(2)", [("f(1)", True), ("g(2)", True)], "_mbpp_v0 and (not _mbpp_v1)"),
        ("assert (f(1) or 0) == 1", [("f(1)", False)], "(_mbpp_v0 or 0) == 1"),
        ("assert f(root) == g(2)", [("f(root)", False), ("g(2)", False)], "_mbpp_v0 == _mbpp_v1"),
        ("assert sorted(f(x)) == [1, 2]", [("f(x)", False)], "sorted(_mbpp_v0) == [1, 2]"),
        ("assert f([x * 2 for x in range(3)]) == 1", [("f([x * 2 for x in range(3)])", False)], "_mbpp_v0 == 1"),
        ("assert f(Pair(1, 2), sum([1])) == 3", [("f(Pair(1, 2), sum([1]))", False)], "_mbpp_v0 == 3"),
        ("assert Pair(1, 2).area() == 2", [("Pair(1, 2).area()", False)], "_mbpp_v0 == 2"),
        ("assert f(1)[0] == len('ab')", [("f(1)", False)], "_mbpp_v0[0] == len('ab')"),
        ("assert root.left is None", [("root.left", False)], "_mbpp_v0 is None"),
    ],
)
def test_split_shapes(line, cuts, check):
    split = checks.split_test(line, THEIRS)
    assert [(c.source, c.truth) for c in split.cuts] == cuts and split.check == check


@pytest.mark.parametrize(
    "line, message",
    [
        ("assert all(f(x) for x in range(3))", "inside a comprehension or lambda"),
        ("assert [f(x) for x in range(3)] == [0, 1, 2]", "inside a comprehension or lambda"),
        ("x = f(1)", "not a single assert"),
        ("assert f(1) == 1; assert f(2) == 2", "not a single assert"),
        ("assert f(1 ==", "not valid Python"),
    ],
)
def test_unsplittable_tests_are_refused(line, message):
    with pytest.raises(checks.UnsupportedTest, match=message):
        checks.split_test(line, THEIRS)


def test_the_task_decides_what_is_the_completions_never_the_completion(full, sanitized):
    """Task 126's reference defines `sum`: its call runs in the sandbox. Task 596's `sys.getsizeof` and the
    sanitized `math.isclose` and `set` stay trusted, whatever a completion would bind."""
    task126 = data.by_id(full)[126]
    assert checks.split_task(task126).tests[0].cuts[0].source == "sum(10, 15)"
    task596 = checks.split_task(data.by_id(full)[596])
    assert task596.tests[0].check.startswith("_mbpp_v0 == sys.getsizeof(")
    assert task596.trusted_imports == ("import sys",)
    isclose = [p for p in sanitized if any("math.isclose" in t for t in p.tests)]
    assert isclose and all("math.isclose(" in checks.split_task(p).tests[0].check for p in isclose)
    assert checks.split_task(data.by_id(sanitized)[2]).tests[0].check == "set(_mbpp_v0) == set((4, 5))"


def test_every_mbpp_assert_splits_and_calls_the_completion(full, sanitized):
    for problem in full + sanitized:
        split = checks.split_task(problem)
        assert all(t.cuts for t in split.tests), problem.task_id  # each test runs the completion
        for cut in split.cuts:  # no cut holds a trusted comparison
            assert not any(op in cut.source for op in (" == ", " != ", "isclose")), (problem.task_id, cut)


# ---------------------------------------------------------------- the wire format

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
    | st.complex_numbers(allow_nan=False) | st.fractions(),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.integers() | st.text(), inner, max_size=4)
    | st.frozensets(st.integers() | st.text(), max_size=4) | st.sets(st.integers(), max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_encode_then_decode_gives_an_equal_value_of_the_same_type(value):
    (kind, back), = wire.decode_result(wire.encode_result(None, [["ok", wire.encode(value)]]), 1)[1]
    assert kind == "ok" and back == value and type(back) is type(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                                              lambda inner: st.lists(inner, max_size=4), max_leaves=30)
       .map(lambda doc: json.dumps(["loaded", [["ok", doc]]]).encode()))
def test_any_bytes_decode_to_a_value_or_malformed(data_bytes):
    try:
        wire.decode_result(data_bytes, 1)
    except wire.Malformed:
        pass


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000,  # nesting past any stack
        b'["loaded", [["ok", ["int", "' + b"f" * 100_000 + b'"]]]]',  # a number literal over the cap
        b'["loaded", [["ok", 1' + b"0" * 100_000 + b"]]]",  # a bare JSON number
        b'["loaded", [["ok", ["float", "NaN"]]], NaN]',
        b"\xff\xfe not utf-8",
        b'{"load_error": null, "values": []}',
        b'["loaded", [["ok", ["frozenset", [["list", []]]]]]]',  # unhashable item of a set
        b'["loaded", [["ok", ["fraction", "1", "0"]]]]',
        b'["load_error", [[[["deep"]]]]]',
        b'["loaded", [["ok", ["bool", 1]]]]',
        b'["loaded", [["maybe", ["none"]]]]',
    ],
)
def test_malformed_results_are_refused_quickly(payload):
    start = time.monotonic()
    try:
        load_error, _ = wire.decode_result(payload, 1)
        assert load_error == "(a reason that is not text)"
    except wire.Malformed:
        pass
    assert time.monotonic() - start < 1


@pytest.mark.parametrize("tag", ["set", "frozenset", "list", "tuple", "keys"])
def test_items_that_share_one_hash_are_refused_in_bounded_time(tag):
    """50,000 distinct ints with one hash would cost a set (here, or in a check's `set(...)`) O(n^2)."""
    modulus = (1 << 61) - 1
    items = [["int", format(k * modulus + 7, "x")] for k in range(50_000)]
    start = time.monotonic()
    with pytest.raises(wire.Malformed, match="share one hash"):
        wire.decode_result(json.dumps(["loaded", [["ok", [tag, items]]]]).encode(), 1)
    assert time.monotonic() - start < 2
    equal = [["int", "7"]] * 50_000  # many equal items are fine
    assert len(wire.decode_result(json.dumps(["loaded", [["ok", ["list", equal]]]]).encode(), 1)[1][0][1]) == 50_000
