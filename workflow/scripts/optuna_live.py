"""Rules optuna_live, optuna_live_rung and optuna_live_round: a collection's trials appended to the live Optuna
journal as it lands; the receipt says how many were added."""

from metatune.io import atomic_write_json
from metatune.report import optuna_export
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        added = optuna_export.append_collection(smk.params.journal, smk.input.collection, smk.params.space)
        print(f"{added} trials added to {smk.params.journal}")
        atomic_write_json(smk.output[0], {"collection": smk.input.collection, "journal": smk.params.journal,
                                          "added": added})


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
