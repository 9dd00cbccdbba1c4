"""Rule plot_search: every dataset's best-so-far curve over its search trials."""

from metatune import export
from metatune.report import data, plots
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        plots.best_so_far(data.best_so_far(export.read_runs(smk.input.runs)), smk.params.method, smk.output[0])


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
