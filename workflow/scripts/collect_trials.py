"""Rules collect_stage1, collect_round and collect_reruns: a group of trials' metrics as one JSONL."""

from metatune import history
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        print(f"{history.write_collection(smk.output[0], smk.input.metrics)} trials")


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
