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
from metatune import export, history
from metatune.report import data, optuna_export, plots, summary
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
    runs = pd.DataFrame({"dataset": ["a"] * 3, "status": ["ok"] * 3, "stage": ["stage1", "stage2", "stage2"],
                         "round": [None, 1, 2], "val_loss": [2.0, 1.75, 2.5]})
    best = pd.DataFrame({"dataset": ["a"], "rank": [1], "winner": [True], "mean_val_loss": [1.5], "ci95_low": [1.25],
                         "ci95_high": [1.75], "n_seeds": [3], "source_run_id": ["g1"], "hp": [{"lora_r": 8}],
                         "verdict": ["unsettled"], "verdict_reason": ["cannot be settled: only top1 was rerun"],
                         "search_val_loss": [1.4], "search_stage": ["stage1"], "optimism": [0.1]})
    text = summary.summary_markdown(runs, best, {}, method="transfer")
    assert "| a | unsettled | 1.5000 | [1.2500, 1.7500] | 3 | lora_r=8 | g1 (top1) |" in text
    assert "the `recommendations` target writes them" in text
    assert "Stage 2 used the `transfer` method: 2 trials in 2 rounds" in text
    assert "beat the stage-1 grid's best on 1 of 1 datasets" in text and "| a | 2.0000 | 1.7500 | -0.2500 |" in text


# How the figures read: any scale of tokens, legends off the data.

@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save, kept open to inspect."""
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, out: figures.append(fig))
    yield figures
    for fig in figures:
        plots.plt.close(fig)


def tick_labels(axis) -> list[str]:
    axis.axes.figure.canvas.draw()
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text()]


@pytest.mark.parametrize("budget, suffix", [(200_000, "k"), (30_000_000, "M"), (4_000_000_000, "G")])
def test_learning_curve_token_axes_read_at_any_scale(drawn, budget, suffix):
    tokens = np.linspace(budget / 10, budget, 10)
    curves = pd.DataFrame({"dataset": "a", "rank": 1, "seed": np.repeat([1, 2], 10), "status": "ok", "winner": True,
                           "tokens": np.tile(tokens, 2), "val_loss": 2.0, "train_loss": 1.9})
    plots.learning_curves(curves, ["a"], "unused.png")
    labels = tick_labels(drawn[0].axes[0].xaxis)
    assert all(re.fullmatch(r"0|\d{1,3}(\.\d)?[kMG]", label) for label in labels), labels
    assert labels[-1].endswith(suffix), labels


def test_log_axes_label_plain_values_without_overlap(drawn):
    space = {"learning_rate": {"type": "log_float", "low": 1e-5, "high": 3e-2, "grid": [1e-5, 3e-2]},
             "lora_r": {"type": "int", "low": 1, "high": 64, "log": True, "grid": [2, 16]}}
    runs = pd.DataFrame({"dataset": "a", "stage": "stage1", "status": "ok", "val_loss": [2.0, 1.5, 1.8, 2.2],
                         "hp_learning_rate": [1e-5, 1e-4, 1e-3, 3e-2], "hp_lora_r": [2, 4, 8, 16]})
    plots.loss_slices(runs, space, "a", "unused.png")
    fig = drawn[0]
    for ax in fig.axes:
        labels = tick_labels(ax.xaxis)
        assert labels and not any("times" in label or "^" in label for label in labels), labels
        extents = [t.get_window_extent() for t in ax.xaxis.get_ticklabels() if t.get_text()]
        assert all(a.x1 <= b.x0 for a, b in zip(extents, extents[1:])), f"{ax.get_xlabel()}: labels overlap"


def test_legends_sit_outside_every_panel(drawn):
    runs = pd.DataFrame({"dataset": ["a"] * 4 + ["b"] * 4, "stage": ["stage1", "stage1", "stage2", "stage2"] * 2,
                         "status": ["ok", "diverged", "ok", "ok"] * 2, "val_loss": [2.0, None, 1.5, 1.7] * 2,
                         "gpu_hours": [0.0] * 8, "wall_s": [1.0, 2.0, 3.0, 4.0] * 2, "peak_mem_mb": [10.0] * 8,
                         "tokens_seen": [1000] * 8, "tokens_trained": [1000] * 8})
    plots.best_so_far(data.best_so_far(runs), "transfer", "unused.png")
    plots.cost_quality(runs, "unused.png")
    plots.stage_gain(data.stage_gain(runs), "transfer", "unused.png")
    for fig in drawn:
        fig.canvas.draw()
        assert not any(ax.get_legend() for ax in fig.axes)
        (legend,) = fig.legends
        box = legend.get_window_extent()
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent()), "a legend covers a panel"
    assert "stage 2 (transfer)" in [t.get_text() for t in drawn[0].legends[0].get_texts()]
    assert drawn[1].axes[0].get_xlabel() == "training seconds (no GPU)"  # no trial used a GPU


# A tiny sweep with its report.

@pytest.fixture(scope="module")
def swept(tiny_sweep) -> Path:
    return tiny_sweep  # the session's (conftest.py)


def test_every_plot_is_there_and_drawn(swept):
    for name in PLOTS:
        assert_not_blank(swept / "results" / "report" / name, name)
    assert not (swept / "results" / "report" / "mbpp.png").exists()  # no dataset of this sweep is marked mbpp
    assert "chunks" in (swept / "logs" / "nanogpt_bins" / "arith.log").read_text()  # the progress bar's last line


def load_studies(journal: Path) -> dict:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage)}


def curve_of(swept: Path, row: pd.Series) -> dict[int, float]:
    """The validation losses of a trial's curve.csv, by tokens seen."""
    curve = pd.read_csv(swept / "results" / "trials" / row["stage"] / row["dataset"] / row["run_id"] / "curve.csv")
    curve = curve.dropna(subset=["val_loss"])
    return dict(zip(curve["tokens"].astype(int), curve["val_loss"]))


def test_optuna_journal_is_what_an_optuna_user_expects(swept):
    studies = load_studies(swept / "results" / "optuna" / "journal.log")
    runs = export.read_runs(swept / "results" / "tables" / "runs.csv").set_index("trial_id")
    space = yaml.safe_load(TINY.read_text())["space"]
    assert sorted(studies) == sorted(f"{d}/{s}" for d in DATASETS for s in TRIALS)
    seen = set()
    for name, study in studies.items():
        dataset, stage = name.split("/")
        assert study.direction == optuna.study.StudyDirection.MINIMIZE
        assert study.user_attrs["trainer"] == "simulated" and study.user_attrs["token_budget"] > 0
        for trial in study.trials:
            assert trial.duration is not None and trial.duration.total_seconds() > 0  # real start and end
            assert trial.intermediate_values, f"{name} trial {trial.number}: no learning curve"
            assert all(isinstance(step, int) for step in trial.intermediate_values)
        if stage == "rerun":
            continue
        assert study.metric_names == ["val_loss"] and len(study.trials) == TRIALS[stage]
        for trial in study.trials:
            row = runs.loc[trial.user_attrs["trial_id"]]
            seen.add(trial.user_attrs["trial_id"])
            assert trial.user_attrs["status"] == row["status"]
            assert trial.params["target_modules"] == row["hp_target_modules"]
            for metric in ("val_loss", "train_loss", "gpu_hours", "wall_s", "tokens_seen", "peak_mem_mb"):
                assert trial.user_attrs[metric] == pytest.approx(row[metric]), metric  # one attribute each: sortable
            assert trial.datetime_start.isoformat() == pd.Timestamp(row["started_at"]).tz_convert(None).isoformat()
            assert trial.intermediate_values == curve_of(swept, row)  # step = tokens seen
            if row["status"] == "ok":
                assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == row["val_loss"]
            else:
                assert trial.state == optuna.trial.TrialState.FAIL and trial.value is None
            if stage == "stage1":  # the grid held lora_r, lora_alpha and batch_size at one value each
                fixed = {k for k, d in trial.distributions.items() if d.single()}
                assert fixed == {"lora_r", "lora_alpha", "batch_size"} == set(study.user_attrs["fixed_params"])
            else:
                assert trial.distributions == {p.name: p.optuna_distribution() for p in Space.parse(space)}
    assert seen == set(runs.index[runs["stage"].ne("rerun")])
    stage1 = studies["arith/stage1"]
    importances = optuna.importance.get_param_importances(stage1)  # the evaluator the dashboard uses
    assert {k: importances[k] for k in ("lora_r", "lora_alpha", "batch_size")} == dict.fromkeys(
        ("lora_r", "lora_alpha", "batch_size"), 0.0)  # nothing held fixed gets importance


def test_rerun_studies_have_a_trial_per_configuration_and_the_winner_as_best(swept):
    studies = load_studies(swept / "results" / "optuna" / "journal.log")
    runs = export.read_runs(swept / "results" / "tables" / "runs.csv")
    best = data.read_best(swept / "results" / "tables" / "best.csv")
    for dataset in DATASETS:
        study = studies[f"{dataset}/rerun"]
        mine = best[best["dataset"].eq(dataset)]
        assert [t.user_attrs["rank"] for t in study.trials] == list(mine["rank"])
        winner = mine[mine["winner"]].iloc[0]
        assert study.best_trial.user_attrs["rank"] == winner["rank"]
        assert study.best_value == pytest.approx(winner["mean_val_loss"])
        for trial in study.trials:
            reruns = runs[runs["dataset"].eq(dataset) & runs["stage"].eq("rerun")]
            seeds = reruns[reruns["rank"].eq(trial.user_attrs["rank"])]
            assert trial.user_attrs["seed_trial_ids"] == list(seeds["trial_id"])
            assert [trial.user_attrs[f"val_loss_seed{i}"] for i in seeds["seed_index"]] == list(seeds["val_loss"])
            assert trial.user_attrs["source_trial_id"] in set(runs["trial_id"])
            assert trial.user_attrs["gpu_hours"] == pytest.approx(seeds["gpu_hours"].sum())


def test_the_live_journal_grew_as_collections_landed_and_holds_the_same_trials(swept):
    live = load_studies(swept / "results" / "optuna" / "live.log")
    final = load_studies(swept / "results" / "optuna" / "journal.log")
    assert sorted(live) == sorted(final)
    for name, study in final.items():
        def key(t):
            return (t.user_attrs.get("trial_id"), t.user_attrs.get("rank"), t.value, t.state, t.params,
                    t.datetime_start, t.datetime_complete, t.intermediate_values)
        assert [key(t) for t in live[name].trials] == [key(t) for t in study.trials], name
    landed, collected = swept / "results" / "optuna" / "landed", swept / "results" / "collected"
    for dataset in DATASETS:  # stage 1 was in the live journal before the reruns were collected
        landed_at = (landed / "stage1" / f"{dataset}.json").stat().st_mtime
        assert landed_at < (collected / "rerun" / f"{dataset}.jsonl").stat().st_mtime
    receipts = sorted(landed.rglob("*.json"))
    assert len(receipts) == len(DATASETS) * (2 + 2)  # stage 1, 2 rounds, the reruns
    assert sum(json.loads(r.read_text())["added"] for r in receipts) == sum(len(s.trials) for s in final.values())


def test_landing_a_collection_again_adds_nothing(swept, tmp_path):
    journal = tmp_path / "live.log"
    collection = swept / "results" / "collected" / "stage1" / "arith.jsonl"
    space = yaml.safe_load(TINY.read_text())["space"]
    assert optuna_export.append_collection(journal, collection, space) == TRIALS["stage1"]
    assert optuna_export.append_collection(journal, collection, space) == 0
    assert len(load_studies(journal)["arith/stage1"].trials) == TRIALS["stage1"]


def test_curves_and_times_of_odd_trials(tmp_path):
    metrics = tmp_path / "t" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text("{}")
    assert optuna_export.read_curve(str(metrics)) == {}  # an external trainer may write no curve
    (tmp_path / "t" / "curve.csv").write_text("step,tokens,train_loss,val_loss\n1,100,2.5,\n2,200,2.4,nan\n"
                                              "3,x,2.3,2.2\n4,400,2.2,2.1\n")
    assert optuna_export.read_curve(str(metrics)) == {400: 2.1}  # rows without a finite loss or tokens skipped
    legacy = history.CollectedTrial(str(metrics), {"wall_s": 30.0})  # from before started_at was recorded
    start, end = optuna_export.times(legacy)
    assert (end - start).total_seconds() == 30.0 and end.timestamp() == pytest.approx(metrics.stat().st_mtime)


def test_runs_csv_in_the_sweep_is_the_documented_table_with_unique_trial_ids(swept):
    runs = export.read_runs(swept / "results" / "tables" / "runs.csv")
    assert runs["trial_id"].is_unique and runs["run_id"].duplicated().any()  # run ids alone repeat across datasets
    stage2 = runs[runs["stage"].eq("stage2")]
    assert sorted(set(stage2["round"])) == [1, 2]
    reruns = runs[runs["stage"].eq("rerun")]
    sources = runs.set_index("trial_id").loc[reruns["source_trial_id"]]
    hp = [c for c in runs.columns if c.startswith("hp_")]
    assert (sources[hp].to_numpy() == reruns[hp].to_numpy()).all()  # each rerun repeats its source's configuration
    assert (pd.to_datetime(runs["finished_at"]) > pd.to_datetime(runs["started_at"])).all()


def test_summary_names_each_winner_with_its_interval(swept):
    text = (swept / "results" / "report" / "summary.md").read_text()
    assert "Stage 2 used the `tpe` method: 8 trials in 2 rounds." in text  # tests/configs/tiny.yaml's
    winner_section = text.split("## Winner per dataset", 1)[1].split("\n## ", 1)[0]
    winners = [r for r in read_csv(swept / "results" / "tables" / "best.csv") if r["winner"] == "True"]
    assert [w["dataset"] for w in winners] == DATASETS
    for w in winners:
        line = next(line for line in winner_section.splitlines() if line.startswith(f"| {w['dataset']} |"))
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
    for table in ("results/tables/runs.csv", "results/tables/best.csv"):  # the tables, in category "Tables"
        assert table in results and results[table]["mime_type"] == "text/csv", table


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
    # right of the navigation
    Image.open(tmp_path / "plot.png").crop((500, 0, 1400, 2000)).save(tmp_path / "content.png")
    # A line plot on a white page: its axes, labels and points are a small share of a 900 x 2000 pixel area.
    assert_not_blank(tmp_path / "content.png", "the Transfer plot in Chromium", min_share=0.005)
