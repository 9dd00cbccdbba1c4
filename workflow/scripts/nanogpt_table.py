"""Rule nanogpt_table: one row per dataset with token counts, metafeatures and paths."""

from metatune import export
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        columns, rows = export.datasets_table(smk.params.datasets, smk.input.meta, smk.input.metafeatures)
        export.write_csv(smk.output[0], columns, rows)


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
