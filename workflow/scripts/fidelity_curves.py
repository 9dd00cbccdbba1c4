"""Rule fidelity_curves: the learning curve of every full-budget trial as a curves JSONL."""

from metatune import fidelity, history
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        print(f"{fidelity.write_curves(smk.output[0], history.read_collections(smk.input.collected))} curves")


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
