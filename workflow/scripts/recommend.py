"""Rule recommend: zero-shot recommendations for one dataset from the other datasets' stage-1 trials."""

from metatune import recommend
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        recommend.write_recommendations(
            smk.output[0], smk.params.space, smk.input.history, list(smk.input.metafeatures),
            target=smk.wildcards.dataset, n=smk.params.n, seed=smk.params.seed,
        )


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
