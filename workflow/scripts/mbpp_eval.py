"""Rules mbpp_baseline and mbpp_eval: generate MBPP completions with the base model (and a dataset's winning
adapter) and score them in the sandbox."""

from pathlib import Path

from metatune.io import atomic_write_json
from metatune.mbpp import pipeline
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        adapter = None
        if "best" in smk.input.keys():
            adapter = pipeline.winning_adapter(smk.input.best, smk.wildcards.dataset, list(smk.input.reruns))
        atomic_write_json(Path(smk.output.results).with_name("adapter.json"), {"model": smk.params.model,
                                                                               "adapter": adapter})
        settings = pipeline.EvalSettings.from_config(smk.params.settings)
        results = pipeline.evaluate(smk.params.model, adapter, settings, smk.output.generations,
                                    smk.output.results, seed=smk.params.seed)
        print({k: v for k, v in results.items() if k != "per_task"})


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
