"""Rule prefetch_dataset: read one dataset's source into resources/raw/{dataset}/."""

import os
from pathlib import Path

from metatune import sources
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        # A cache under the project unless the user pointed Hugging Face elsewhere (HF_HOME on $SCRATCH, say).
        cache_dir = None if ("HF_HOME" in os.environ or "HF_DATASETS_CACHE" in os.environ) else smk.params.cache_dir
        result = sources.prefetch(smk.params.source, smk.wildcards.dataset, Path(smk.output.records).parent, cache_dir)
        print(f"{smk.wildcards.dataset}: {result.n_records} records, {result.n_bytes} bytes, capped={result.capped}")


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
