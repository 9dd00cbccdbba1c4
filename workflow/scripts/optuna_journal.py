"""Rule optuna_journal: every trial in an Optuna JournalStorage file, a study per dataset and stage."""

from metatune import history
from metatune.report import optuna_export
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        collected = history.read_collections(smk.input.collected)
        counts = optuna_export.write_journal(smk.output[0], [t.metrics for t in collected], smk.params.space,
                                             smk.params.datasets, optuna_export.rung_curves(collected))
        print(f"{sum(counts.values())} trials in {len(counts)} studies: {counts}")


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
