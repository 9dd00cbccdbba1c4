"""Progress bars for long steps, written where the step's stderr goes: the rule's log under Snakemake.

A log is no terminal, so the bar updates at most every few seconds there (a line each time, not a redraw) and
always ends with its final count; at a terminal it redraws as usual."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, unit: str, total: int | None = None) -> Iterator[T]:
    interactive = sys.stderr.isatty()
    yield from tqdm(items, desc=desc, unit=unit, total=total, file=sys.stderr, ascii=not interactive,
                    mininterval=0.1 if interactive else 5.0, dynamic_ncols=interactive)
