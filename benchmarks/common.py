"""What every benchmark script shares: quiet logging and the aligned result table."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence


def quiet_logging() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING)
    for name in ("freshrank", "transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned first column, right-aligned figures, two spaces between columns."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells).rstrip())
