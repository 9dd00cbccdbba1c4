"""Rule stage1_history: every dataset's stage-1 trials as one table for the optimizer."""

from metatune import history
from metatune.io import atomic_write_json, read_json
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        rows = history.history_rows(history.collected_metrics(smk.input.collected), smk.params.space)
        history.write_history_csv(smk.output.history, rows, smk.params.space)
        atomic_write_json(smk.output.metafeatures,
                          {d: read_json(p) for d, p in zip(smk.params.datasets, smk.input.metafeatures)})


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
