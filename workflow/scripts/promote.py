"""Rule promote: rank one dataset's rung, record why each trial was or was not promoted, and link the
promoted trials' checkpoints into the next rung's slots."""

from pathlib import Path

from metatune import fidelity, history
from metatune.io import atomic_write_json
from metatune.rulelog import log_to


def main(smk) -> None:
    with log_to(smk.log[0]):
        rungs = [fidelity.Rung(**r) for r in smk.params.schedule]
        rung = int(smk.wildcards.rung)
        record = fidelity.promote_rung(history.read_collections([smk.input.collected]), list(smk.input.checkpoints),
                                       rungs[rung - 1], rungs[rung], smk.params.method,
                                       fidelity.read_curves(smk.input.prior))
        Path(smk.output.resume).mkdir(parents=True, exist_ok=True)
        for slot in record["configs"]:
            if slot["hp"] is not None:
                fidelity.link_checkpoint(slot["checkpoint"], fidelity.slot_checkpoint(smk.output.resume, slot["slot"]))
        atomic_write_json(smk.output.promotions, {"dataset": smk.wildcards.dataset, **record})
        print(f"rung {rung}: promoted {record['n_promoted']} of {record['n_trials']} by {record['method']}")


main(snakemake)  # noqa: F821 - Snakemake's script directive defines `snakemake`
