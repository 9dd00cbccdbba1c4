"""The report: its numbers, the plots of a tiny sweep (not blank), the Optuna journal loaded back with Optuna, the
plain summary with its recommendations, `snakemake --report`, and the report in Chromium."""

import base64
import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import ROOT, run_snakemake
from metatune.report import data, summary
from metatune.space import Space

TINY = ROOT / "tests" / "configs" / "tiny.yaml"
DATASETS = ["arith", "markov"]
TRIALS = {"stage1": 4, "stage2": 4, "rerun": 6}  # per dataset, as tests/configs/tiny.yaml says
PLOTS = ["landscape/arith.png", "landscape/markov.png", "slices/arith.png", "slices/markov.png", "best_so_far.png",
         "reruns.png", "learning_curves.png", "transfer_metafeatures.png", "stage2_vs_stage1.png", "cost_quality.png"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,2000", "--virtual-time-budget=4000"]


def assert_not_blank(image, what: str, min_share: float = 0.02) -> None:
    """Something is drawn: a fair share of the pixels differ from the most common (background) color."""
    pixels = np.asarray(Image.open(image).convert("RGB")).reshape(-1, 3)
    colors, counts = np.unique(pixels, axis=0, return_counts=True)
    drawn = 1 - counts.max() / len(pixels)
    assert drawn > min_share and len(colors) > 20, f"{what} looks blank: {drawn:.1%} drawn, {len(colors)} colors"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# The numbers behind the plots.

def test_pareto_front_keeps_only_undominated_points():
    points = pd.DataFrame({"gpu_hours": [1.0, 2.0, 2.0, 3.0, 4.0, None], "val_loss": [3.0, 2.0, 2.5, 2.2, 1.0, 0.1]})
    front = data.pareto_front(points, "gpu_hours")
    assert list(zip(front["gpu_hours"], front["val_loss"])) == [(1.0, 3.0), (2.0, 2.0), (4.0, 1.0)]


def test_best_so_far_skips_failed_trials_and_reruns():
    runs = pd.DataFrame({
        "dataset": ["a"] * 5, "stage": ["stage1", "stage1", "stage2", "stage2", "rerun"],
        "status": ["diverged", "ok", "ok", "failed", "ok"], "val_loss": [9.0, 3.0, 2.0, None, 0.5],
    })
    curve = data.best_so_far(runs)
    assert list(curve["trial"]) == [1, 2, 3, 4]
    assert curve["best"].tolist()[1:] == [3.0, 2.0, 2.0] and np.isnan(curve["best"].iloc[0])
    gain = data.stage_gain(runs)
    assert (gain["stage1_best"].item(), gain["stage2_best"].item()) == (3.0, 2.0)


def test_summary_without_recommendations_says_how_to_get_them():
    runs = pd.DataFrame({"dataset": ["a"], "status": ["ok"]})
    best = pd.DataFrame({"dataset": ["a"], "rank": [1], "winner": [True], "mean_val_loss": [1.5], "ci95_low": [1.25],
                         "ci95_high": [1.75], "n_seeds": [3], "source_run_id": ["g1"], "hp": [{"lora_r": 8}],
                         "verdict": ["unsettled"], "verdict_reason": ["cannot be settled: only top1 was rerun"],
                         "search_val_loss": [1.4], "search_stage": ["stage1"], "optimism": [0.1]})
    text = summary.summary_markdown(runs, best, {})
    assert "| a | unsettled | 1.5000 | [1.2500, 1.7500] | 3 | lora_r=8 | g1 (top1) |" in text
    assert "the `recommendations` target writes them" in text


# A tiny sweep with its report.

@pytest.fixture(scope="module")
def swept(tiny_sweep) -> Path:
    return tiny_sweep  # the session's (conftest.py)


def test_every_plot_is_there_and_drawn(swept):
    for name in PLOTS:
        assert_not_blank(swept / "results" / "report" / name, name)
    assert not (swept / "results" / "report" / "mbpp.png").exists()  # no dataset of this sweep is marked mbpp
    assert "chunks" in (swept / "logs" / "nanogpt_bins" / "arith.log").read_text()  # the progress bar's last line


def test_optuna_journal_holds_every_trial(swept):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(swept / "results" / "optuna" / "journal.log")))
    runs = {(r["dataset"], r["stage"], r["run_id"]): r for r in read_csv(swept / "results" / "tables" / "runs.csv")}
    studies = optuna.get_all_study_summaries(storage)
    assert sorted(s.study_name for s in studies) == sorted(f"{d}/{s}" for d in DATASETS for s in TRIALS)
    space = yaml.safe_load(TINY.read_text())["space"]
    n_failed = 0
    for s in studies:
        dataset, stage = s.study_name.split("/")
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        assert study.direction == optuna.study.StudyDirection.MINIMIZE and study.metric_names == ["val_loss"]
        assert len(study.trials) == TRIALS[stage]
        for trial in study.trials:
            row = runs[(dataset, stage, trial.user_attrs["run_id"])]
            assert trial.user_attrs["status"] == row["status"]
            assert trial.distributions == {p.name: p.optuna_distribution() for p in Space.parse(space)}
            assert trial.params["target_modules"] == row["hp_target_modules"]
            assert trial.user_attrs["metrics"]["gpu_hours"] == float(row["gpu_hours"])
            if row["status"] == "ok":
                assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == float(row["val_loss"])
            else:
                assert trial.state == optuna.trial.TrialState.FAIL and trial.value is None
                n_failed += 1
    assert n_failed == sum(r["status"] != "ok" for r in runs.values())


def test_summary_names_each_winner_with_its_interval(swept):
    text = (swept / "results" / "report" / "summary.md").read_text()
    winners = [r for r in read_csv(swept / "results" / "tables" / "best.csv") if r["winner"] == "True"]
    assert [w["dataset"] for w in winners] == DATASETS
    for w in winners:
        line = next(line for line in text.splitlines() if line.startswith(f"| {w['dataset']} |"))
        mean, low, high = (float(w[k]) for k in ("mean_val_loss", "ci95_low", "ci95_high"))
        assert f"| {mean:.4f} | [{low:.4f}, {high:.4f}] |" in line and w["source_run_id"] in line
    for dataset in DATASETS:  # the zero-shot recommendations, leave-one-out, from the `recommendations` target
        assert any(line.startswith(f"| {dataset} |") and "learning_rate=" in line for line in text.splitlines())
    assert "not computed" not in text


@pytest.fixture(scope="module")
def report_html(swept) -> Path:
    run_snakemake(swept, "--report", "report.html", "--configfile", str(TINY))
    return swept / "report.html"


def embedded_results(html: str) -> dict:
    start = html.index("var results = ", html.index('<script id="results">')) + len("var results = ")
    return json.JSONDecoder().raw_decode(html, start)[0]


def test_snakemake_report_embeds_every_plot(report_html, tmp_path):
    results = embedded_results(report_html.read_text())
    for name in PLOTS:
        entry = results[f"results/report/{name}"]
        assert entry["mime_type"] == "image/png" and entry["caption"].count(".") >= 1
        image = tmp_path / name.replace("/", "_")
        image.write_bytes(base64.b64decode(entry["data_uri"].split("base64,", 1)[1]))
        assert_not_blank(image, f"the report's {name}")
    assert "results/report/summary.md" in results


def chromium(report: Path, tmp_path: Path, script: str | None, *args: str) -> subprocess.CompletedProcess:
    """Open the report (with `script` run in the page once it has loaded) in headless Chromium."""
    page = report
    if script:
        head, tail = report.read_text().rsplit("</body>", 1)
        page = tmp_path / "page.html"
        page.write_text(f"{head}<script>{script}</script></body>{tail}")
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [shutil.which("chromium"), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


# Clicks a category in the report's navigation, then the eye button of its first result, as a reader would.
SHOW_FIRST_RESULT = """
setTimeout(() => {
  [...document.querySelectorAll("a")].find(a => a.textContent.trim() === "%s").click();
  setTimeout(() => document.querySelector('a[iconname="eye"]').click(), 300);
}, 300);
"""


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium not found: install the Debian package `chromium` (`make system-packages` as root)")
def test_report_shows_its_plots_in_chromium(report_html, tmp_path):
    dom = chromium(report_html, tmp_path, None, "--dump-dom").stdout
    navigation = re.findall(r"<span>([^<]+)</span></a>", dom)  # the navigation's links: an icon, then a name
    assert {"Loss landscapes", "Search", "Reruns", "Transfer", "Cost", "Summary"} <= set(navigation)  # no MBPP here
    chromium(report_html, tmp_path, None, f"--screenshot={tmp_path / 'home.png'}")
    assert_not_blank(tmp_path / "home.png", "the report's first page")
    chromium(report_html, tmp_path, SHOW_FIRST_RESULT % "Transfer", f"--screenshot={tmp_path / 'plot.png'}")
    Image.open(tmp_path / "plot.png").crop((500, 0, 1400, 2000)).save(tmp_path / "content.png")  # right of the navigation
    # A line plot on a white page: its axes, labels and points are a small share of a 900 x 2000 pixel area.
    assert_not_blank(tmp_path / "content.png", "the Transfer plot in Chromium", min_share=0.005)
