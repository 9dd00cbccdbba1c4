"""Rule summary: results/report/summary.md, the winners and their verdicts, MBPP where configured, and the
zero-shot recommendations in plain Markdown."""

from metatune import export
from metatune.io import atomic_write_text, read_json
from metatune.report import data, summary
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        recommendations = {doc["dataset"]: doc for doc in map(read_json, smk.input.recommendations)}
        runs, best = export.read_runs(smk.input.runs), data.read_best(smk.input.best)
        mbpp = data.read_mbpp_comparison(smk.input.mbpp) if smk.input.mbpp else None
        text = summary.summary_markdown(runs, best, recommendations, mbpp, smk.params.method)
        atomic_write_text(smk.output[0], text)


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
