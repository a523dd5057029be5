"""The benchmark's progress bar on stderr: redrawn in place on a terminal, a few lines in a log."""

from __future__ import annotations

import sys
import time
from typing import Callable

PROGRESS_WIDTH = 30
PROGRESS_EVERY = 0.5  # seconds between redraws, so a log file gets a few lines, not thousands
_last_drawn = {"at": 0.0}

Progress = Callable[[str, int, int], None]


def progress(label: str, done: int, total: int) -> None:
    """Item `done` (0-based) of `total` under `label`; the last item is always drawn."""
    now = time.monotonic()
    if now - _last_drawn["at"] < PROGRESS_EVERY and done + 1 < total:
        return
    _last_drawn["at"] = now
    filled = int(PROGRESS_WIDTH * (done + 1) / total) if total else PROGRESS_WIDTH
    bar = "#" * filled + " " * (PROGRESS_WIDTH - filled)
    end = "" if sys.stderr.isatty() else "\n"
    print(f"\r  {label:<34} [{bar}] {done + 1}/{total}", end=end, file=sys.stderr, flush=True)


def labelled(show: Progress, label: str) -> Callable[[int, int], None]:
    """A (done, total) callback drawing under one label."""
    return lambda done, total: show(label, done, total)
