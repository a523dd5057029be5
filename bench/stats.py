"""The benchmark's result rows."""

from __future__ import annotations

import math

import msgspec

from proto.metrics import percentile


class Row(msgspec.Struct):
    """One line of the results table (the JSON shape the benchmark issue asks for)."""

    name: str
    unit: str
    p50: float
    p99: float | None
    baseline_p50: float
    baseline_p99: float | None
    ratio: float
    target: str
    met: bool
    samples: int
    baseline_samples: int
    note: str = ""
    # Row-specific figures (errors, shares, counts), also written to the JSON.
    details: dict[str, float] = {}
    # The raw samples, for the plot (left out of the JSON).
    distribution: list[float] = []
    baseline_distribution: list[float] = []
    distribution_unit: str = ""  # when the samples are not in `unit` (a rate row's latencies)


def latency_row(name: str, unit: str, samples: list[float], baseline: list[float],
                target_p99: float, note: str = "") -> Row:
    """A latency row: lower is better; ratio = baseline p50 / warmwire p50 (x times faster).
    No baseline samples: a row with no baseline and no ratio (the note must say why)."""
    p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
    base50, base99 = percentile(baseline, 0.5), percentile(baseline, 0.99)
    return Row(name=name, unit=unit, p50=p50, p99=p99, baseline_p50=base50, baseline_p99=base99,
               ratio=(base50 / p50 if p50 else math.inf) if base50 is not None else math.nan, target=f"p99 < {target_p99:g} {unit}",
               met=p99 is not None and p99 < target_p99, samples=len(samples), baseline_samples=len(baseline), note=note,
               distribution=samples, baseline_distribution=baseline)
