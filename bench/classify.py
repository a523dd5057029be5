"""Router classifier, in process: per-message latency and held-out accuracy.

    python -m bench.classify [--quick] [--json FILE]

Loads the classifier once, then times `classify()` call by call (time.perf_counter_ns) over
the dev and held-out messages, cycled in a fixed shuffled order, after one warm-up pass.
Before timing, gc.freeze() moves everything loaded so far out of the garbage collector's
reach, as the router does at start (proto/service.py): without it a collection walking the
weights and modules now and then lands inside a timed call.
Prints p50/p99 in microseconds against the target, for the scorer in use (the C one where
it is built) and, as the baseline, for the Python scorer, measured in the same run;
then the held-out accuracy with the per-tier confusion table.  `run(quick)` returns the
figures for a bench runner.
"""
from __future__ import annotations

import argparse
import gc
import json
import random
import re
import sys
import time
from pathlib import Path

from proto.metrics import percentile
from services.router.classifier import Classifier
from services.router.classifier.evaluate import evaluate, load_jsonl

from .stats import Row, latency_row

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
HELDOUT = DATA / "router_heldout.jsonl"
DEV = DATA / "router_dev.jsonl"
CALLS = {True: 10_000, False: 100_000}
TARGET_P99_US = 100.0
NS_PER_US = 1_000
SEED = 11
P50, P99 = 0.50, 0.99


def measure(clf: Classifier, texts: list[str], calls: int) -> list[int]:
    """Nanoseconds per classify() call, `calls` calls cycling over `texts`."""
    order = texts[:]
    random.Random(SEED).shuffle(order)
    for text in order:  # warm-up: first-call costs are not what a running router sees
        clf.classify(text)
    gc.freeze()  # what the router does once it has loaded (see the module docstring)
    return _time_calls(clf.classify, order, calls)


def run(quick: bool) -> dict:
    """Measure and report; returns {"p50_us", "p99_us", "accuracy", ...}."""
    started = time.perf_counter()
    clf = Classifier.load()
    load_s = time.perf_counter() - started
    heldout, dev = load_jsonl(HELDOUT), load_jsonl(DEV)
    texts = [text for text, _tier in heldout + dev]
    samples = sorted(measure(clf, texts, CALLS[quick]))
    python_samples = sorted(measure(Classifier.load(native=False), texts, CALLS[quick]))
    p50 = percentile(samples, P50) / NS_PER_US
    p99 = percentile(samples, P99) / NS_PER_US
    report = evaluate(lambda text: clf.classify(text).tier, heldout)
    dev_report = evaluate(lambda text: clf.classify(text).tier, dev)
    print(f"classifier: loaded in {load_s * 1000:.0f} ms, scorer {clf.scorer_name}; "
          f"{len(samples)} calls over {len(texts)} messages")
    print(f"latency per message: p50 {p50:.1f} us, p99 {p99:.1f} us, max {samples[-1] / NS_PER_US:.0f} us"
          f" (target p99 < {TARGET_P99_US:.0f} us: {'met' if p99 < TARGET_P99_US else 'NOT MET'})")
    python_p50 = percentile(python_samples, P50) / NS_PER_US
    python_p99 = percentile(python_samples, P99) / NS_PER_US
    print(f"baseline, Python scorer: p50 {python_p50:.1f} us, p99 {python_p99:.1f} us"
          f" (ratio p50 {p50 / python_p50:.2f}, p99 {p99 / python_p99:.2f})")
    print(f"\nheld-out ({HELDOUT.name}):\n{report.table()}")
    if report.errors:
        print(f"misrouted:\n{report.error_lines()}")
    print(f"\ndev ({DEV.name}): accuracy {dev_report.accuracy:.4f}")
    return {"p50_us": p50, "p99_us": p99, "accuracy": report.accuracy,
            "dev_accuracy": dev_report.accuracy, "calls": len(samples), "load_ms": load_s * 1000,
            "scorer": clf.scorer_name, "python_p50_us": python_p50, "python_p99_us": python_p99}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.classify", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{CALLS[True]} calls instead of {CALLS[False]}")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    result = run(args.quick)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


# The plan's old router, for the baseline column: regular expressions checked in order, the
# first match wins (English keywords; `\b` and spaces do not work on Thai).
OLD_ROUTER = (
    (re.compile(r"^(hi|hello|hey|thanks|thank you|ok|okay)\b", re.I), "inline"),
    (re.compile(r"\b(search|find|remember|note|what do you know)\b", re.I), "oracle-only"),
    (re.compile(r"\b(code|debug|error|analy[sz]e|compare|plan|why|how)\b", re.I), "container-full"),
)
OLD_DEFAULT = "container-light"


def old_router(text: str) -> str:
    return next((tier for pattern, tier in OLD_ROUTER if pattern.search(text)), OLD_DEFAULT)


def bench_row(system, quick: bool, progress) -> Row:
    """The classifier's row in `./run.sh bench`: µs per message, and held-out accuracy
    against the old regex router's."""
    progress("classify: in-process latency", 0, 1)
    clf = Classifier.load()
    heldout, dev = load_jsonl(HELDOUT), load_jsonl(DEV)
    texts = [text for text, _tier in heldout + dev]
    samples = [ns / NS_PER_US for ns in measure(clf, texts, CALLS[quick])]
    old = [ns / NS_PER_US for ns in _time_calls(old_router, texts, CALLS[quick])]
    accuracy = evaluate(lambda text: clf.classify(text).tier, heldout).accuracy
    old_accuracy = evaluate(old_router, heldout).accuracy
    progress("classify: done", 0, 1)
    row = latency_row("classify", "us", samples, old, TARGET_P99_US,
                      note=(f"{clf.scorer_name} scorer; held-out accuracy {accuracy:.1%}; "
                            f"baseline: the old regex router, accuracy {old_accuracy:.1%} "
                            "(faster, but wrong)"))
    row.details = {"accuracy": accuracy, "baseline_accuracy": old_accuracy,
                   "scorer": clf.scorer_name}
    return row


def _time_calls(route, texts: list[str], calls: int) -> list[int]:
    """Nanoseconds per call of route(text), `calls` calls cycling over `texts`."""
    clock, samples = time.perf_counter_ns, []
    for i in range(calls):
        text = texts[i % len(texts)]
        start = clock()
        route(text)
        samples.append(clock() - start)
    return samples


if __name__ == "__main__":
    sys.exit(main())
