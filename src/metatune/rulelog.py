"""Run a rule script's body with its output in the rule's log, and its error, if any, in both places."""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator


@contextlib.contextmanager
def log_to(path: str) -> Iterator[None]:
    real_stderr = sys.stderr
    with open(path, "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        handler = logging.StreamHandler(log)
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        try:
            yield
        except Exception as e:
            traceback.print_exc()
            # Snakemake shows the job's stderr: say what went wrong there too, in one line that names the culprit.
            print(f"metatune: {type(e).__name__}: {e}", file=real_stderr)
            raise
        finally:
            logging.getLogger().removeHandler(handler)
