"""Rule summarize_reruns: best.csv, every rerun configuration against its dataset's winner, and the verdicts."""

from metatune import export, history, select
from metatune.io import read_json
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        rerun_metrics = history.collected_metrics(smk.input.collected)
        rows = []
        for dataset, selection_path in zip(smk.params.datasets, smk.input.selections):
            mine = [m for m in rerun_metrics if m["dataset"] == dataset]
            rows += [{"dataset": dataset, **r} for r in select.summarize_reruns(mine, read_json(selection_path))]
        export.write_csv(smk.output[0], *export.best_table(rows, smk.params.space))


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
