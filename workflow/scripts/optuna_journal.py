"""Rule optuna_journal: every trial in an Optuna JournalStorage file, a study per dataset and stage."""

from metatune.report import optuna_export
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        counts = optuna_export.write_journal(smk.output[0], smk.input.collected, smk.params.space, smk.params.datasets)
        print(f"{sum(counts.values())} trials in {len(counts)} studies: {counts}")


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
