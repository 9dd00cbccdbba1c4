"""Rule export: runs.csv, one row per trial of every stage."""

from metatune import export, history
from metatune.io import read_json
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        metafeatures = {d: read_json(p) for d, p in zip(smk.params.datasets, smk.input.metafeatures)}
        metrics = history.collected_metrics(smk.input.collected)
        columns, rows = export.runs_table(metrics, smk.params.space, metafeatures, smk.params.datasets)
        export.write_csv(smk.output[0], columns, rows)


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
