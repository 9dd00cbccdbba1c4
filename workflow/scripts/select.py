"""Rule select: the top-K configurations of one dataset to rerun, with the ranking that chose them."""

from metatune import history, select
from metatune.io import atomic_write_json
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        metrics = history.collected_metrics(smk.input.collected)
        atomic_write_json(smk.output[0], select.select_top(metrics, smk.params.top_k))


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
