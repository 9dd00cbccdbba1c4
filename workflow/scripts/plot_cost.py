"""Rule plot_cost: validation loss against GPU hours and peak memory, with Pareto fronts."""

from metatune import export
from metatune.report import plots
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        plots.cost_quality(export.read_runs(smk.input.runs), smk.output[0])


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
