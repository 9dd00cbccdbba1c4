"""Rule plot_transfer: winners' hyperparameters against metafeatures, and stage 2 against stage 1."""

from metatune import export
from metatune.report import data, plots
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        runs, best = export.read_runs(smk.input.runs), data.read_best(smk.input.best)
        table = data.transfer_table(runs, best)
        targets = [t for t in data.TRANSFER_TARGETS if t in smk.params.space]
        metafeatures = data.informative_metafeatures(table, [f"hp_{t}" for t in targets], smk.params.n_metafeatures)
        print(f"metafeatures shown: {metafeatures}")
        plots.transfer_metafeatures(table, metafeatures, targets, smk.params.space, smk.output.metafeatures)
        plots.stage_gain(data.stage_gain(runs), smk.params.method, smk.output.stage_gain)


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
