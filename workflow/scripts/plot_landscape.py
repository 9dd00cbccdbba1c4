"""Rule plot_landscape: one dataset's loss landscape over pairs of hyperparameters, and its 1-D slices."""

from metatune import export
from metatune.report import plots
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        runs = export.read_runs(smk.input.runs)
        plots.loss_landscape(runs, smk.params.space, smk.wildcards.dataset, smk.output.pairs)
        plots.loss_slices(runs, smk.params.space, smk.wildcards.dataset, smk.output.slices)


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
