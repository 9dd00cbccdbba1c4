"""pass@k, the results document, the paired comparison, and `metatune mbpp-score` end to end."""

from __future__ import annotations

import json
import shutil

import pytest

from metatune import cli
from metatune.io import DataError
from metatune.mbpp import sandbox, score
from metatune.mbpp.execute import Verdict


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 1, 2 / 5),
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (5, 2, 3, 1 - 1 / 10),  # 1 - C(3,3)/C(5,3)
        (5, 3, 3, 1.0),  # fewer than k failures: some k-subset always passes
        (5, 0, 3, 0.0),
        (10, 1, 10, 1.0),
        (200, 10, 10, 1 - 0.59145213),  # 1 - C(190,10)/C(200,10), computed with exact integers
    ],
)
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert score.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-7)


def test_pass_at_k_refuses_impossible_counts():
    with pytest.raises(ValueError):
        score.pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        score.pass_at_k(3, 1, 4)


def _verdicts(table: dict[int, list[str]]) -> list[Verdict]:
    return [Verdict(t, i, s, "" if s == "passed" else "x", 0.01) for t, ss in table.items() for i, s in enumerate(ss)]


def test_results_document():
    vs = _verdicts({11: ["passed", "failed"], 12: ["syntax_error", "syntax_error"], 13: ["failed", "passed"]})
    doc = score.score(vs, [1, 2], "bwrap+setuid+rlimits", 1.5)
    assert doc["pass@1"] == pytest.approx((0.5 + 0 + 0.5) / 3)
    assert doc["pass@2"] == pytest.approx(2 / 3)
    assert doc["syntax_rate"] == pytest.approx(4 / 6)
    assert (doc["n_tasks"], doc["n_samples"], doc["isolation"]) == (3, 6, "bwrap+setuid+rlimits")
    assert doc["per_task"][2] == {"task_id": 13, "passed": False, "status": "failed", "reason": "x",
                                  "n": 2, "n_passed": 1, "wall_s": 0.02}
    with pytest.raises(DataError, match="pass@3 needs at least 3 samples"):
        score.score(vs, [3], "x", 0.0)


def test_paired_bootstrap_comparison():
    base = score.score(_verdicts({t: ["failed"] for t in range(40)}), [1], "x", 0)
    better = score.score(_verdicts({t: ["passed" if t < 10 else "failed"] for t in range(40)}), [1], "x", 0)
    cmp = score.compare(better, base, n_boot=2000, seed=1)
    assert cmp["delta_pass@1"] == pytest.approx(0.25) and cmp["n_tasks"] == 40
    lo, hi = cmp["ci95"]
    assert 0.1 < lo < 0.25 < hi < 0.45  # about 0.25 ± 1.96 * sqrt(0.25 * 0.75 / 40)
    same = score.compare(base, base)
    assert same["delta_pass@1"] == 0 and same["ci95"] == [0.0, 0.0]
    assert score.compare(better, base, n_boot=2000, seed=1) == cmp  # seeded: reproducible


@pytest.mark.skipif(not shutil.which("bwrap"), reason="needs bubblewrap")
def test_cli_scores_a_samples_file(tmp_path, capsys, shared):
    mbpp = str(shared / "mbpp" / "mbpp.jsonl")
    rows = {json.loads(line)["task_id"]: json.loads(line) for line in open(mbpp)}
    samples = tmp_path / "samples.jsonl"
    lines = [
        {"task_id": 11, "completion": rows[11]["code"], "sample": 0},
        {"task_id": 11, "completion": "def remove_Occ(s, c):\n    return s", "sample": 1},
        {"task_id": 12, "completion": rows[12]["code"], "sample": 0},
        {"task_id": 12, "completion": "def sort_matrix(m) return m", "sample": 1},
    ]
    samples.write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = tmp_path / "results.json"
    argv = ["mbpp-score", "--problems", mbpp, "--samples", str(samples), "--out", str(out), "--k", "1", "2"]
    assert cli.main(argv + ["--workers", "1"]) == 0
    doc = json.loads(out.read_text())
    assert (doc["pass@1"], doc["pass@2"], doc["syntax_rate"], doc["n_tasks"]) == (0.5, 1.0, 0.75, 2)
    assert doc["isolation"] == sandbox.isolation(sandbox.SandboxSettings())
    assert ([(r["task_id"], r["status"], r["n_passed"]) for r in doc["per_task"]]
            == [(11, "passed", 1), (12, "passed", 1)])
    assert "pass@1=0.5000" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left behind

    samples.write_text(json.dumps({"task_id": 99999, "completion": "x"}) + "\n")
    assert cli.main(argv[:-3]) == 2
    assert "task 99999 is not in" in capsys.readouterr().err
