"""Rule metafeatures: the dataset's metafeatures.json."""

from metatune import metafeatures
from metatune.io import atomic_write_json
from metatune.rulelog import log_to
from metatune.tokenizers import get_tokenizer


def main(smk) -> None:
    with log_to(smk.log[0]):
        tokenizer = get_tokenizer(smk.params.tokenizer["name"], smk.params.tokenizer["bpe_file"])
        features = metafeatures.compute(smk.input.train, smk.input.stats, tokenizer, smk.params.sample_bytes)
        atomic_write_json(smk.output[0], features)
        print(features)


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
