"""Rule normalize: raw records -> train/val/test JSONL and counts."""

from pathlib import Path

from metatune import normalize
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        fmt = normalize.DatasetFormat.from_config(smk.params.dataset)
        stats = normalize.normalize(smk.input.records, fmt, smk.params.split, Path(smk.output.train).parent)
        print(f"{fmt.name}: {stats}")


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
