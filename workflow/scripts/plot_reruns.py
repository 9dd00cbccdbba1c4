"""Rule plot_reruns: each rerun configuration's mean and interval, and the winners' learning curves."""

from metatune import export
from metatune.report import data, plots
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        best = data.read_best(smk.input.best)
        plots.rerun_intervals(best, data.rerun_seeds(export.read_runs(smk.input.runs)), smk.output.intervals)
        curves = data.rerun_curves(smk.input.collected, best)
        plots.learning_curves(curves, list(dict.fromkeys(best["dataset"])), smk.output.curves)


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
