"""Rule pretrain_base: the tiny GPT-2-config base model, trained from scratch on the datasets' train.bin files."""

from pathlib import Path

from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        import torch

        from metatune.trainers.pretrain import PretrainSettings, pretrain

        torch.set_num_threads(smk.threads)
        print(pretrain(list(smk.input.train), Path(smk.output.config).parent,
                       PretrainSettings.from_dict(smk.params.settings)))


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
