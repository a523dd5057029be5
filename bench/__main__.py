"""./run.sh bench [--quick] [--json FILE]: warmwire against the old design, in one run.

Each row measures warmwire and its baseline on this machine in the same run and prints both
with their ratio, because an absolute time alone says little on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import msgspec
import psutil

from . import agents, classify, gateway, idle, inline_latency, routing, scale, search, sqlite, tools
from .harness import System
from .progress import progress
from .report import REPORT, write_markdown, write_plot
from .stats import Row

# Idle first, while nothing else has run in this warmwire yet.
ROWS = (idle.run, inline_latency.run, search.bench_rows, agents.run, scale.run, sqlite.run, routing.run,
        gateway.run, tools.run, classify.bench_row)


def machine() -> dict:
    return {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "load_avg": os.getloadavg()}


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def print_table(rows: list[Row]) -> None:
    print(f"\n{'row':<20}{'unit':<13}{'p50':>10}{'p99':>10}{'base p50':>11}{'base p99':>11}"
          f"{'ratio':>9}  target")
    for row in rows:
        print(f"{row.name:<20}{row.unit:<13}{number(row.p50):>10}{number(row.p99):>10}"
              f"{number(row.baseline_p50):>11}{number(row.baseline_p99):>11}{number(row.ratio):>8}x"
              f"  {row.target}: {'met' if row.met else 'NOT MET'}")
        if row.note:
            print(f"{'':<20}{row.note}")


def _stage(measure) -> str:
    return measure.__module__.rsplit(".", 1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warmwire bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run for a smoke check")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--only", metavar="STAGE[,STAGE]", help="run only these stages (for development): "
                        + ", ".join(_stage(m) for m in ROWS))
    args = parser.parse_args(argv)
    stages = [m for m in ROWS if not args.only or _stage(m) in args.only.split(",")]
    started = time.monotonic()
    about = machine()
    rows = []
    print("starting warmwire in a temporary home", file=sys.stderr)
    with System() as system:
        for measure in stages:
            stage_started = time.monotonic()
            result = measure(system, args.quick, progress)
            rows.extend(result if isinstance(result, list) else [result])
            print(f"\n{_stage(measure)}: {time.monotonic() - stage_started:.0f} s", file=sys.stderr)
    seconds = time.monotonic() - started
    print_table(rows)
    print(f"\n{len(rows)} rows in {seconds:.0f} s on {os.cpu_count()} cpus")
    plot_path = Path(args.json).with_suffix(".png") if args.json else REPORT.with_name("latency.png")
    plot = write_plot(rows, plot_path)
    report = write_markdown(rows, about, seconds, args.quick, plot.name if plot else None)
    print(f"report: {report}" + (f", plot: {plot}" if plot else ""))
    if args.json:
        document = {"rows": [_json_row(row) for row in rows], "machine": about,
                    "quick": args.quick, "seconds": seconds}
        Path(args.json).write_text(json.dumps(document, indent=2, allow_nan=False))
    return 0


def _json_row(row: Row) -> dict:
    """The row as strict JSON: no raw samples, and null for a ratio with no finite value."""
    fields = msgspec.to_builtins(row)
    fields.pop("distribution", None)
    fields.pop("baseline_distribution", None)
    fields.pop("distribution_unit", None)
    return {key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in fields.items()}


if __name__ == "__main__":
    sys.exit(main())
