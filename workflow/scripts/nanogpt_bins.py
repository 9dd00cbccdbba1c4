"""Rule nanogpt_bins: train.bin/val.bin and meta.json for one dataset."""

from pathlib import Path

from metatune import bins
from metatune.io import read_json
from metatune.rulelog import log_to
from metatune.tokenizers import get_tokenizer


def main(smk) -> None:
    with log_to(smk.log[0]):
        tokenizer = get_tokenizer(smk.params.tokenizer["name"], smk.params.tokenizer["bpe_file"])
        settings = bins.BinSettings(workers=smk.threads, chunk_bytes=smk.params.settings["chunk_bytes"])
        manifest = read_json(smk.input.manifest)
        meta = bins.build_bins({"train": smk.input.train, "val": smk.input.val}, Path(smk.output.meta).parent,
                               tokenizer, settings, provenance={"source": manifest["source"]})
        print(meta)


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
