"""./run.sh bench [--quick] [--json FILE]: warmwire against the old design, in one run.

Each row measures warmwire and its baseline on this machine in the same run and prints both
with their ratio, because an absolute time alone says little on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import msgspec
import psutil

from . import inline_latency
from .harness import System
from .stats import Row

ROWS = (inline_latency,)


PROGRESS_WIDTH = 30
PROGRESS_EVERY = 0.5  # seconds between redraws, so a log file gets a few lines, not thousands
_last_drawn = {"at": 0.0}


def progress(label: str, done: int, total: int) -> None:
    now = time.monotonic()
    if now - _last_drawn["at"] < PROGRESS_EVERY and done + 1 < total:
        return
    _last_drawn["at"] = now
    filled = int(PROGRESS_WIDTH * (done + 1) / total) if total else PROGRESS_WIDTH
    bar = "#" * filled + " " * (PROGRESS_WIDTH - filled)
    end = "" if sys.stderr.isatty() else "\n"
    print(f"\r  {label:<34} [{bar}] {done + 1}/{total}", end=end, file=sys.stderr, flush=True)


def machine() -> dict:
    return {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "load_avg": os.getloadavg()}


def print_table(rows: list[Row]) -> None:
    print(f"\n{'row':<18}{'unit':<6}{'p50':>10}{'p99':>10}{'base p50':>11}{'base p99':>11}"
          f"{'ratio':>9}  target")
    for row in rows:
        p99 = f"{row.p99:.3f}" if row.p99 is not None else "-"
        base99 = f"{row.baseline_p99:.1f}" if row.baseline_p99 is not None else "-"
        print(f"{row.name:<18}{row.unit:<6}{row.p50:>10.3f}{p99:>10}{row.baseline_p50:>11.1f}"
              f"{base99:>11}{row.ratio:>8.0f}x  {row.target} {'met' if row.met else 'NOT MET'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warmwire bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run for a smoke check")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = parser.parse_args(argv)
    started = time.monotonic()
    rows = []
    print("starting warmwire in a temporary home", file=sys.stderr)
    with System() as system:
        for module in ROWS:
            rows.append(module.run(system, args.quick, progress))
            print(file=sys.stderr)
    print_table(rows)
    print(f"\n{len(rows)} rows in {time.monotonic() - started:.0f} s on {os.cpu_count()} cpus")
    if args.json:
        document = {"rows": msgspec.to_builtins(rows), "machine": machine()}
        with open(args.json, "w") as out:
            json.dump(document, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
