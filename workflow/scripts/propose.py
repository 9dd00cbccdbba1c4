"""Rule propose: the stage-2 proposals of one dataset's round, from every dataset's history."""

from metatune import proposals
from metatune.io import read_json
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        proposals.write_proposals(
            smk.output[0], smk.config["space"], smk.input.history, smk.input.earlier, read_json(smk.input.metafeatures),
            target=smk.wildcards.dataset, round_=int(smk.wildcards.round), n=smk.params.batch,
            method=smk.params.method, seed=smk.params.seed,
        )


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
