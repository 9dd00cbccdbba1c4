"""The report's figures, drawn with matplotlib (Agg: rule jobs have no display) from the frames of
metatune.report.data. Each function takes its data and an output path and writes one PNG."""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from metatune.io import atomic_write_bytes  # noqa: E402
from metatune.report.data import SEARCH_STAGES, ok_loss, pareto_front, sweep_spend  # noqa: E402
from metatune.space import Param, Space  # noqa: E402

STAGE_COLORS = {"stage1": "tab:blue", "stage2": "tab:orange", "rerun": "tab:green"}
FAILED = {"marker": "x", "color": "tab:red", "s": 30, "label": "diverged / failed"}
DPI = 100


def save(fig, out: str | Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())


def panels(n: int, ncols: int, size: tuple[float, float] = (4.2, 3.4)):
    """A figure of `n` axes in rows of `ncols`, the unused ones hidden."""
    ncols = max(1, min(n, ncols))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def figure_legend(fig, handles=None, ncols: int = 5) -> None:
    """One legend for the whole figure, below its panels (the title is above): never over the data. Without
    `handles`, the labelled artists of every panel, each label once."""
    if handles is None:
        labelled = {}
        for ax in fig.axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                labelled.setdefault(label, handle)
        handles, labels = list(labelled.values()), list(labelled)
    else:
        labels = [h.get_label() for h in handles]
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(ncols, len(handles)), fontsize=8,
                   frameon=False)


def tokens_axis(axis) -> None:
    """Token counts as 500k, 2M, 1.5G: readable at any scale."""
    axis.set_major_formatter(EngFormatter(sep=""))
    axis.set_major_locator(MaxNLocator(5))


def log_axis(axis, values: np.ndarray, integer: bool) -> None:
    """Log-scale ticks written plainly (0.0003, 16, 128), as many per decade as the data's range leaves room
    for, the minor ticks unlabelled: matplotlib's default labels a narrow range's minor ticks until they overlap.
    Within less than a decade the scale is nearly linear, and evenly spaced ticks read best."""
    finite = values[np.isfinite(values) & (values > 0)]
    decades = math.log10(finite.max() / finite.min()) if len(finite) else 0.0
    if decades < 1.0:
        axis.set_major_locator(MaxNLocator(4, integer=integer))
    else:
        subs = (1.0, 2.0, 5.0) if decades <= 1.5 else (1.0, 3.0) if decades <= 2.5 else (1.0,)
        axis.set_major_locator(LogLocator(subs=subs, numticks=20))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    axis.set_minor_formatter(NullFormatter())


def dataset_colors(names: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def axis_values(ax, param: Param, values: pd.Series, axis: str, jitter_seed: int = 0) -> np.ndarray:
    """Positions for a hyperparameter's values on `axis`: log scale where the space says so; categorical choices
    as ticks, jittered so repeated choices stay visible."""
    if param.kind == "categorical":
        choices = [str(c) for c in param.choices]
        index = values.astype(str).map({c: i for i, c in enumerate(choices)}).to_numpy(dtype=float)
        rng = np.random.default_rng(jitter_seed)
        (ax.set_xticks if axis == "x" else ax.set_yticks)(range(len(choices)), choices)
        return index + rng.uniform(-0.15, 0.15, len(index))
    if param.log:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        log_axis(ax.xaxis if axis == "x" else ax.yaxis, values.to_numpy(dtype=float), param.kind == "int")
    return values.to_numpy(dtype=float)


def landscape_pairs(space: dict) -> list[tuple[str, str]]:
    """The learning rate against every other hyperparameter (rank first), then rank against alpha, whose ratio
    scales LoRA's update; the first parameter stands in for a space without a learning rate."""
    names = list(space)
    anchor = "learning_rate" if "learning_rate" in space else names[0]
    others = sorted((n for n in names if n != anchor), key=lambda n: n != "lora_r")
    pairs = [(anchor, n) for n in others]
    if {"lora_r", "lora_alpha"} <= set(space) and anchor != "lora_r":
        pairs.append(("lora_r", "lora_alpha"))
    return pairs


def loss_landscape(runs: pd.DataFrame, space: dict, dataset: str, out: str | Path) -> None:
    """Pairs of hyperparameters of one dataset's search trials, colored by validation loss."""
    trials = runs[runs["dataset"].eq(dataset) & runs["stage"].isin(SEARCH_STAGES)]
    loss, ok = ok_loss(trials), trials["status"].eq("ok")
    pairs = landscape_pairs(space)
    fig, axes = panels(len(pairs), 4)
    norm = plt.Normalize(loss.min(), loss.max())
    best = loss.idxmin() if ok.any() else None
    for ax, (px, py) in zip(axes, pairs):
        x = axis_values(ax, Space.parse(space)[px], trials[f"hp_{px}"], "x", 1)
        y = axis_values(ax, Space.parse(space)[py], trials[f"hp_{py}"], "y", 2)
        mask = ok.to_numpy()
        points = ax.scatter(x[mask], y[mask], c=loss[ok], cmap="viridis", norm=norm, s=45, edgecolors="k",
                            linewidths=0.3)
        ax.scatter(x[~mask], y[~mask], **FAILED)
        if best is not None:
            i = trials.index.get_loc(best)
            ax.scatter([x[i]], [y[i]], marker="*", s=260, facecolors="none", edgecolors="tab:red", linewidths=1.5,
                       label="best")
        ax.set_xlabel(px)
        ax.set_ylabel(py)
    fig.colorbar(points, ax=axes, label="validation loss (lower is better)", shrink=0.8)
    fig.suptitle(f"{dataset}: loss landscape over {len(trials)} search trials (stages 1 and 2)")
    figure_legend(fig)
    save(fig, out)


def loss_slices(runs: pd.DataFrame, space: dict, dataset: str, out: str | Path) -> None:
    """Validation loss against each hyperparameter alone (1-D slices), by stage."""
    trials = runs[runs["dataset"].eq(dataset) & runs["stage"].isin(SEARCH_STAGES)]
    loss, ok = ok_loss(trials), trials["status"].eq("ok").to_numpy()
    fig, axes = panels(len(space), 4, (3.8, 3.0))
    for ax, name in zip(axes, space):
        x = axis_values(ax, Space.parse(space)[name], trials[f"hp_{name}"], "x", 3)
        for stage in SEARCH_STAGES:
            mask = ok & trials["stage"].eq(stage).to_numpy()
            ax.scatter(x[mask], loss[mask], s=25, color=STAGE_COLORS[stage], alpha=0.8, label=stage)
        # Failed trials have no loss: mark them along the top edge at their value.
        ax.scatter(x[~ok], np.full((~ok).sum(), 0.97), transform=blended_transform_factory(ax.transData, ax.transAxes),
                   **FAILED)
        ax.set_xlabel(name)
        ax.set_ylabel("validation loss")
    fig.suptitle(f"{dataset}: validation loss against each hyperparameter")
    figure_legend(fig)
    save(fig, out)


def best_so_far(curves: pd.DataFrame, method: str, out: str | Path) -> None:
    """One panel per dataset: every search trial's loss and the best so far, stage 2 (`method`) shaded."""
    names = list(dict.fromkeys(curves["dataset"]))
    fig, axes = panels(len(names), 3)
    for ax, name in zip(axes, names):
        d = curves[curves["dataset"].eq(name)]
        stage2 = d[d["stage"].eq("stage2")]
        if len(stage2):
            ax.axvspan(stage2["trial"].min() - 0.5, stage2["trial"].max() + 0.5, color=STAGE_COLORS["stage2"],
                       alpha=0.12, label=f"stage 2 ({method})")
        for stage in SEARCH_STAGES:
            s = d[d["stage"].eq(stage)]
            ax.scatter(s["trial"], s["val_loss"], s=14, color=STAGE_COLORS[stage], alpha=0.7, label=f"{stage} trial")
        ax.step(d["trial"], d["best"], where="post", color="k", linewidth=1.8, label="best so far")
        ax.set_title(name)
        ax.set_xlabel("trial (sweep order)")
        ax.set_ylabel("validation loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure_legend(fig)
    save(fig, out)


def stage_gain(gain: pd.DataFrame, method: str, out: str | Path) -> None:
    """The best loss the optimizer's stage 2 (`method`) found against the grid's stage-1 best, per dataset."""
    fig, ax = plt.subplots(figsize=(6.5, 6), layout="constrained")
    colors = dataset_colors(list(gain["dataset"]))
    for row in gain.itertuples():
        ax.scatter(row.stage1_best, row.stage2_best, s=70, color=colors[row.dataset], label=row.dataset,
                   edgecolors="k", linewidths=0.4)
    low = min(gain["stage1_best"].min(), gain["stage2_best"].min())
    high = max(gain["stage1_best"].max(), gain["stage2_best"].max())
    pad = 0.05 * (high - low or 1.0)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], "k--", linewidth=1, label="no gain")
    better = int((gain["stage2_best"] < gain["stage1_best"]).sum())
    ax.set_title(f"stage 2 ({method}) beat the stage-1 grid on {better} of {len(gain)} datasets")
    ax.set_xlabel("best validation loss of stage 1 (grid)")
    ax.set_ylabel(f"best validation loss of stage 2 ({method})")
    ax.set_aspect("equal", adjustable="datalim")
    figure_legend(fig, ncols=3)
    save(fig, out)


COMPARISON_COLORS = {"winner": "tab:red", "not separated": "tab:orange"}  # the rest (beaten or unjudged): gray


def rerun_intervals(best: pd.DataFrame, seeds: pd.DataFrame, out: str | Path) -> None:
    """Each rerun configuration's mean loss and 95% interval over seeds, its seeds as dots; the winner in red,
    those it is tied with in orange, and the dataset's verdict in words under each panel."""
    names = list(dict.fromkeys(best["dataset"]))
    fig, axes = panels(len(names), 3, (4.4, 3.6))
    for ax, name in zip(axes, names):
        b = best[best["dataset"].eq(name)]
        for row in b.itertuples():
            color = COMPARISON_COLORS.get(row.comparison, "tab:gray")
            has_interval = not math.isnan(row.ci95_low)
            yerr = [[row.mean_val_loss - row.ci95_low], [row.ci95_high - row.mean_val_loss]] if has_interval else None
            ax.errorbar([row.rank], [row.mean_val_loss], yerr=yerr, capsize=6, color=color, marker="o", markersize=7)
            s = seeds[seeds["dataset"].eq(name) & seeds["rank"].eq(row.rank)]
            ax.scatter(np.full(len(s), row.rank + 0.12), ok_loss(s), s=14, color="k", alpha=0.6)
            if not math.isnan(row.p_better_than_winner):  # the paired numbers: what the verdict rests on
                ax.annotate(f"{row.diff_vs_winner:+.4f} paired\nP(better) {row.p_better_than_winner:.2f}",
                            (row.rank, row.mean_val_loss), xytext=(-10, 0), textcoords="offset points", fontsize=7,
                            ha="right", va="center", color=color)  # left: the seeds' dots are on the right
        ax.set_xticks(list(b["rank"]), [f"top{r}" for r in b["rank"]])
        ax.set_xlim(b["rank"].min() - 0.9, b["rank"].max() + 0.5)  # room for the paired numbers on the left
        ax.set_title(f"{name}: {b['verdict'].iloc[0]}")
        ax.set_ylabel("validation loss")
        ax.text(0.5, -0.14, textwrap.fill(b["verdict_reason"].iloc[0], 52), transform=ax.transAxes, ha="center",
                va="top", fontsize=8)
    fig.suptitle("rerun mean and 95% interval per configuration (red: winner; orange: tied with it; dots: seeds)")
    save(fig, out)


def learning_curves(curves: pd.DataFrame, names: list[str], out: str | Path) -> None:
    """Validation (solid) and training (dashed) loss over tokens of each dataset's winner, one color per seed;
    the other rerun configurations in gray."""
    fig, axes = panels(len(names), 3)
    seed_colors = {seed: plt.get_cmap("tab10")(i % 10) for i, seed in enumerate(sorted(curves["seed"].unique()))}
    for ax, name in zip(axes, names):
        d = curves[curves["dataset"].eq(name)]
        winners = d[d["winner"]]
        if winners.empty:  # external trainers need not write a curve, and a dataset may have no winner
            ax.text(0.5, 0.5, "no learning curve of a winner recorded", ha="center", va="center",
                    transform=ax.transAxes)
        for (seed, winner), c in d.groupby(["seed", "winner"]):
            for _, one in c.groupby("rank"):
                if winner:
                    ax.plot(one["tokens"], one["val_loss"], linewidth=1.6, color=seed_colors[seed])
                    ax.plot(one["tokens"], one["train_loss"], "--", linewidth=1, color=seed_colors[seed])
                else:
                    ax.plot(one["tokens"], one["val_loss"], color="0.7", linewidth=0.8)
        ax.set_title(f"{name}: top{winners['rank'].iloc[0]}" if len(winners) else name)
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("loss")
        tokens_axis(ax.xaxis)
    handles = [plt.Line2D([], [], color=c, linewidth=1.6, label=f"seed {s}") for s, c in seed_colors.items()]
    handles += [plt.Line2D([], [], color="k", linestyle="--", linewidth=1, label="training loss"),
                plt.Line2D([], [], color="0.7", linewidth=0.8, label="other rerun configurations (val)")]
    fig.suptitle("learning curves of the winners (solid: validation loss)")
    figure_legend(fig, handles, ncols=len(handles))
    save(fig, out)


def transfer_metafeatures(table: pd.DataFrame, metafeatures: list[str], targets: list[str], space: dict,
                          out: str | Path) -> None:
    """Each winner's hyperparameters (rows) against the dataset's metafeatures (columns)."""
    colors = dataset_colors(list(table["dataset"]))
    fig, axes = plt.subplots(len(targets), len(metafeatures), figsize=(3.4 * len(metafeatures), 3.0 * len(targets)),
                             squeeze=False, layout="constrained")
    for i, target in enumerate(targets):
        for j, mf in enumerate(metafeatures):
            ax = axes[i][j]
            axis_values(ax, Space.parse(space)[target], table[f"hp_{target}"], "y")
            ax.scatter(table[mf], table[f"hp_{target}"], c=[colors[d] for d in table["dataset"]], s=60,
                       edgecolors="k", linewidths=0.4)
            ax.set_xlabel(mf.removeprefix("mf_"))
            ax.set_ylabel(f"winner's {target}" if j == 0 else "")
    figure_legend(fig, [plt.Line2D([], [], marker="o", linestyle="", color=c, label=d) for d, c in colors.items()])
    save(fig, out)


def cost_quality(runs: pd.DataFrame, out: str | Path) -> None:
    """Validation loss against GPU hours (wall-clock seconds where no trial used a GPU) and peak memory for every
    ok trial, each dataset's Pareto front drawn; and the best full-budget loss of the sweep against the tokens it
    has trained (rungs stop trials early)."""
    ok = runs[runs["status"].eq("ok")]
    names = list(dict.fromkeys(runs["dataset"]))
    colors = dataset_colors(names)
    time_cost = ("gpu_hours", "GPU hours") if ok["gpu_hours"].gt(0).any() else ("wall_s", "training seconds (no GPU)")
    fig, axes = plt.subplots(1, 3, figsize=(19, 5), layout="constrained")
    spend = sweep_spend(runs)
    for name in names:
        d = spend[spend["dataset"].eq(name)]
        axes[2].step(d["tokens"], d["best"], where="post", color=colors[name], label=name)
    axes[2].set_xlabel("tokens trained by the sweep (stages 1 and 2)")
    tokens_axis(axes[2].xaxis)
    axes[2].set_ylabel("best full-budget validation loss so far")
    axes[2].set_title("winner quality against cost")
    for ax, (cost, label) in zip(axes[:2], (time_cost, ("peak_mem_mb", "peak memory (MB)"))):
        for name in names:
            d = ok[ok["dataset"].eq(name)]
            ax.scatter(d[cost], d["val_loss"], s=14, alpha=0.5, color=colors[name], label=name)
            front = pareto_front(d, cost)
            ax.step(front[cost], front["val_loss"], where="post", color=colors[name], linewidth=1.5)
        ax.set_xlabel(label)
        ax.set_ylabel("validation loss")
        ax.set_title(f"validation loss against {label} (lines: Pareto fronts)")
    figure_legend(fig)
    save(fig, out)


def mbpp_comparison(table: pd.DataFrame, out: str | Path) -> None:
    """MBPP pass@1 of each dataset's adapter against the base model, and the difference with its 95% interval."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.5 * len(table) + 3), layout="constrained")
    y = np.arange(len(table))
    left.barh(y - 0.2, table["baseline_pass@1"], height=0.4, color="0.6", label="base model")
    left.barh(y + 0.2, table["adapter_pass@1"], height=0.4, color="tab:blue", label="adapter")
    left.set_yticks(y, table["dataset"])
    left.set_xlabel("pass@1")
    left.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncols=2, frameon=False)  # above the bars
    right.errorbar(table["diff"], y, xerr=[table["diff"] - table["ci95_low"], table["ci95_high"] - table["diff"]],
                   fmt="o", capsize=5, color="tab:blue")
    right.axvline(0, color="k", linewidth=1)
    right.set_yticks(y, [f"{d}: {v}" for d, v in zip(table["dataset"], table["verdict"])])
    right.set_xlabel("pass@1 difference, adapter - base, task by task (95% interval)")
    right.set_title("adapter against the base model: better, worse or not separated")
    save(fig, out)
