"""Rule plot_mbpp: MBPP pass@1 of the adapters against the base model."""

from metatune.report import data, plots
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        plots.mbpp_comparison(data.read_mbpp_comparison(smk.input.comparison), smk.output[0])


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
