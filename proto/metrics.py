"""Percentiles for the figures services report in `status` (and the benchmark prints)."""

from __future__ import annotations

import math
from typing import Iterable


def percentile(samples: Iterable[float], fraction: float) -> float | None:
    """Nearest-rank percentile (fraction 0.99 = p99); None when there are no samples."""
    ordered = sorted(samples)
    if not ordered:
        return None
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]
