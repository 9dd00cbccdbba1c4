"""`metatune recommend` and the workflow's `recommendations` target are one thing: the same files give the same
document; the target's own trials are left out unless asked for; the ranking follows what is printed."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from conftest import ROOT
from metatune import cli
from metatune.recommend import recommend
from metatune.space import Space

TINY = ROOT / "tests" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def recommended(tiny_sweep):
    """The session's tiny sweep: its `recommendations` target wrote one file per dataset (for the summary)."""
    written = sorted(p.name for p in (tiny_sweep / "results" / "recommend").glob("*.json"))
    assert written == ["arith.json", "markov.json"]
    return tiny_sweep


def cli_json(capsys, *args: str) -> dict:
    code = cli.main(["recommend", *args, "--space", str(TINY), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


@pytest.mark.parametrize("dataset", ["arith", "markov"])
def test_the_cli_prints_what_the_workflow_wrote(recommended, capsys, dataset):
    data = recommended / "results" / "data"
    rule = json.loads((recommended / "results" / "recommend" / f"{dataset}.json").read_text())
    # The dataset is named by the folder of its metafeatures file: its own trials are left out, as in the rule.
    doc = cli_json(capsys, "--metafeatures", str(data / dataset / "metafeatures.json"),
                   "--history", str(recommended / "results" / "stage1" / "history.csv"),
                   "--source-metafeatures", *map(str, sorted(data.glob("*/metafeatures.json"))), "--n", "5")
    assert doc == rule
    assert doc["left_out"] == [dataset] and dataset not in {d["dataset"] for d in doc["nearest_datasets"]}


def test_own_trials_only_when_asked(recommended, capsys):
    data = recommended / "results" / "data"
    args = ["--metafeatures", str(data / "arith" / "metafeatures.json"),
            "--history", str(recommended / "results" / "stage1" / "history.csv"),
            "--source-metafeatures", *map(str, sorted(data.glob("*/metafeatures.json")))]
    own = cli_json(capsys, *args, "--include-own")
    assert own["left_out"] == [] and own["nearest_datasets"][0] == {"dataset": "arith (own trials)", "distance": 0.0,
                                                                     "weight": own["nearest_datasets"][0]["weight"]}
    # Under another name its metafeatures still give it away.
    renamed = cli_json(capsys, *args, "--dataset", "fresh")
    assert renamed["left_out"] == ["arith"] and renamed["dataset"] == "fresh"


def test_ranked_by_the_expected_quantile_it_prints():
    space = {"lr": {"type": "log_float", "low": 1e-5, "high": 1e-1, "grid": [1e-3]},
             "mod": {"type": "categorical", "choices": ["a", "b"], "grid": ["a"]}}
    rng = random.Random(3)
    rows = []
    for d, shift in (("s1", 0.0), ("s2", 0.5), ("s3", 1.0)):
        for _ in range(15):
            hp = Space.parse(space).sample(rng)
            u = Space.parse(space).unit_vector(hp)[0]
            rows.append({"dataset": d, **hp, "status": "diverged" if u > 0.9 else "ok",
                         "objective": (u - 0.3 - 0.3 * shift) ** 2 + (hp["mod"] == "b") * 0.1})
    mf = {"s1": {"x": 0.0}, "s2": {"x": 0.5}, "s3": {"x": 1.0}, "t": {"x": 0.6}}
    doc = recommend(space, pd.DataFrame(rows), mf, "t", 6)
    expected = [r["expected_quantile"] for r in doc["recommendations"]]
    assert expected == sorted(expected) and [r["rank"] for r in doc["recommendations"]] == [1, 2, 3, 4, 5, 6]
    for r in doc["recommendations"]:
        q, f = r["predicted_quantile"], r["fail_probability"]
        assert r["expected_quantile"] == pytest.approx((1 - f) * q + f, abs=2e-4)


def test_the_text_says_what_the_numbers_mean(recommended, capsys):
    data = recommended / "results" / "data"
    code = cli.main(["recommend", "--metafeatures", str(data / "markov" / "metafeatures.json"),
                     "--history", str(recommended / "results" / "stage1" / "history.csv"),
                     "--source-metafeatures", *map(str, sorted(data.glob("*/metafeatures.json"))),
                     "--space", str(TINY), "--n", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "left out its own trials (markov)" in out
    assert "not a prediction for this one" in out and "better than" in out
