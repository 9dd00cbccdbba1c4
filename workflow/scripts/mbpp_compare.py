"""Rule mbpp_compare: pass@1 of each dataset's adapter against the zero-shot baseline, with a paired
bootstrap interval of the difference."""

from metatune import export
from metatune.mbpp import pipeline
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        rows = pipeline.comparison_rows(smk.input.baseline, dict(zip(smk.params.datasets, smk.input.adapters)))
        export.write_csv(smk.output[0], pipeline.COMPARISON_COLUMNS, rows)


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
