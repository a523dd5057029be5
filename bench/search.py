"""Knowledge search, client to client over the real socket, on 10,000 Thai and English notes.

warmwire: a DEALER client sends ``SearchRequest`` frames to the search-cache one at a time —
first each query once (uncached: full text + vector + fusion), then again (cached).
Baseline (the old knowledge server had no search cache): the same searches, on the same
data, against a search-cache started with ``search.cache_size = 0``.

    python -m bench.search [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

import zmq

from proto.frames import Codec, KnowledgeIn, KnowledgeOut, LearnRequest, SearchRequest
from proto.sockets import connect_dealer
from supervisor.commands.status import fetch

from .harness import System
from .progress import Progress, labelled, progress
from .stats import Row, latency_row, percentile

NOTES = {False: 10_000, True: 2_000}
QUERIES = {False: 300, True: 100}
CACHED_PASSES = 5
WARMUP = 20
LEARN_WINDOW = 64
TARGET_CACHED_P99_MS = 1.0
TARGET_UNCACHED_P99_MS = 30.0
ANSWER_TIMEOUT_MS = 30_000
INDEX_DEADLINE = 600.0
POLL_INTERVAL = 0.2
SEED = 4

PEOPLE = ["Anna", "Ben", "Mike", "Somchai", "Nok", "Jake", "Ploy", "Dr. Lee", "mom", "my boss"]
THINGS = ["passport", "car insurance", "wifi password", "gym membership", "dentist appointment",
          "rent", "flight", "laptop warranty", "electricity bill", "bike lock code",
          "library books", "vaccine", "phone contract", "parking spot", "spare key"]
WHEN = ["on Monday", "next Friday", "in March", "every morning", "at 10 am", "before noon",
        "after work", "this weekend", "in two weeks", "on the 25th"]
THAI_PEOPLE = ["แม่", "พี่นก", "เจ้านาย", "หมอสมชาย", "เพื่อนบ้าน", "ลูกค้า", "น้องพลอย", "ช่างแอร์"]
THAI_THINGS = ["ค่าเช่าห้อง", "บัตรเครดิต", "ประกันรถ", "รหัสไวไฟ", "นัดหมอฟัน", "ค่าไฟ", "ตั๋วเครื่องบิน",
               "พาสปอร์ต", "ค่าเน็ต", "ที่จอดรถ", "กุญแจสำรอง", "ภาษีรถ"]
THAI_WHEN = ["วันจันทร์", "ศุกร์หน้า", "เดือนมีนาคม", "ทุกเช้า", "สิบโมง", "ก่อนเที่ยง", "หลังเลิกงาน",
             "สุดสัปดาห์นี้", "อีกสองอาทิตย์", "วันที่ 25"]


def generate_notes(count: int, rng: random.Random) -> list[str]:
    """Half English, half Thai; every note distinct (a number in each)."""
    notes = []
    for number in range(count):
        if number % 2:
            notes.append(f"{rng.choice(THAI_PEOPLE)}บอกว่า{rng.choice(THAI_THINGS)}ต้องจัดการ"
                         f"{rng.choice(THAI_WHEN)} เลขอ้างอิง {number}")
        else:
            notes.append(f"{rng.choice(PEOPLE)} said the {rng.choice(THINGS)} is due "
                         f"{rng.choice(WHEN)}, reference {number}.")
    return notes


def generate_queries(count: int, rng: random.Random) -> list[str]:
    queries: dict[str, None] = {}
    while len(queries) < count:
        if len(queries) % 2:
            query = f"{rng.choice(THAI_THINGS)}ต้องจัดการเมื่อไหร่ {rng.choice(THAI_PEOPLE)}"
        else:
            query = f"when is the {rng.choice(THINGS)} due for {rng.choice(PEOPLE)}"
        if rng.random() < 0.5:
            query += f" {rng.randrange(10_000)}"
        queries[query] = None
    return list(queries)


def search_cache_stats(system: System) -> dict:
    status = fetch(system.config)
    service = next((s for s in status.services if s.name == "search-cache"), None) if status else None
    return service.stats if service else {}


def wait_until_indexed(system: System) -> None:
    deadline = time.monotonic() + INDEX_DEADLINE
    while time.monotonic() < deadline:
        stats = search_cache_stats(system)
        if stats.get("chroma") == "up" and not stats.get("unindexed") and not stats.get("pending_writes"):
            return
        time.sleep(POLL_INTERVAL)
    raise RuntimeError("the search-cache did not reach chroma and finish indexing in time")


def load_notes(endpoint: str, notes: list[str], progress: Callable[[int, int], None]) -> None:
    requests, answers = Codec(KnowledgeIn), Codec(KnowledgeOut)
    sock = connect_dealer(zmq.Context.instance(), endpoint)
    try:
        sent = answered = 0
        while answered < len(notes):
            while sent < len(notes) and sent - answered < LEARN_WINDOW:
                sock.send(requests.encode(LearnRequest(req=str(sent), text=notes[sent], source="bench")))
                sent += 1
            if not sock.poll(ANSWER_TIMEOUT_MS):
                raise RuntimeError("no answer from the search-cache while loading notes")
            answer = answers.decode(sock.recv())
            if answer.error:
                raise RuntimeError(f"a note was refused: {answer.error}")
            answered += 1
            if answered % 100 == 0:
                progress(answered, len(notes))
    finally:
        sock.close()


def measure(endpoint: str, queries: list[str], passes: int, progress: Callable[[int, int], None]) -> list[float]:
    """Milliseconds per search, client to client, one in flight at a time."""
    requests, answers = Codec(KnowledgeIn), Codec(KnowledgeOut)
    sock = connect_dealer(zmq.Context.instance(), endpoint)
    samples = []
    total = passes * len(queries)
    try:
        for number in range(total):
            frame = requests.encode(SearchRequest(req=uuid.uuid4().hex, query=queries[number % len(queries)]))
            started = time.perf_counter_ns()
            sock.send(frame)
            if not sock.poll(ANSWER_TIMEOUT_MS):
                raise RuntimeError("no answer from the search-cache")
            answer = answers.decode(sock.recv())
            samples.append((time.perf_counter_ns() - started) / 1e6)
            if answer.error or answer.degraded:
                raise RuntimeError(f"search failed or degraded: {answer.error or 'degraded'}")
            if number % 50 == 0:
                progress(number, total)
    finally:
        sock.close()
    return samples


def summary(samples: list[float]) -> dict:
    return {"p50": percentile(samples, 0.5), "p99": percentile(samples, 0.99), "samples": len(samples)}


def run(quick: bool, show: Progress = progress) -> dict:
    rng = random.Random(SEED)
    notes = generate_notes(NOTES[quick], rng)
    queries = generate_queries(QUERIES[quick], rng)
    warmup = [f"warm up query {n}" for n in range(WARMUP)]
    # One home for both runs: the baseline searches the very notes the first run loaded.
    home = Path(tempfile.mkdtemp(prefix="ww-bench-search-"))
    try:
        with System(home) as system:
            endpoint = system.config.endpoint("search")
            started = time.monotonic()
            load_notes(endpoint, notes, labelled(show, "search: loading notes"))
            wait_until_indexed(system)
            load_seconds = time.monotonic() - started
            measure(endpoint, warmup, 1, lambda *_: None)
            uncached = measure(endpoint, queries, 1, labelled(show, "search: uncached hybrid"))
            cached = measure(endpoint, queries, CACHED_PASSES, labelled(show, "search: cached"))
            stats = search_cache_stats(system)
        with System(home, WARMWIRE_SEARCH_CACHE_SIZE="0") as baseline:
            wait_until_indexed(baseline)
            endpoint = baseline.config.endpoint("search")
            measure(endpoint, warmup, 1, lambda *_: None)
            no_cache = measure(endpoint, queries, 2, labelled(show, "search: cache off (baseline)"))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(file=sys.stderr)
    result = {
        "notes": len(notes), "queries": len(queries), "load_seconds": round(load_seconds, 1),
        "cached": summary(cached), "uncached_hybrid": summary(uncached), "cache_off": summary(no_cache),
        "targets": {"cached_p99_ms": TARGET_CACHED_P99_MS, "uncached_p99_ms": TARGET_UNCACHED_P99_MS},
        "search_cache_stats": stats,
    }
    result["ratio_cache_off_to_cached_p50"] = result["cache_off"]["p50"] / result["cached"]["p50"]
    result["met"] = {"cached": result["cached"]["p99"] < TARGET_CACHED_P99_MS,
                     "uncached": result["uncached_hybrid"]["p99"] < TARGET_UNCACHED_P99_MS}
    result["raw"] = {"cached": cached, "uncached_hybrid": uncached, "cache_off": no_cache}
    return result


def bench_rows(system, quick: bool, progress) -> list[Row]:
    """Rows 2 and 3 of `./run.sh bench`. They run in warmwires of their own (the baseline
    needs one with the cache off over the same notes), not in the one given."""
    result = run(quick, progress)  # the runner's own bar
    raw = result["raw"]
    note = f"{result['notes']} notes, {result['queries']} queries, client to client"
    return [
        latency_row("search_cached", "ms", raw["cached"], raw["uncached_hybrid"], TARGET_CACHED_P99_MS,
                    note=f"baseline: the same searches uncached; {note}"),
        latency_row("search_uncached", "ms", raw["uncached_hybrid"], raw["cache_off"], TARGET_UNCACHED_P99_MS,
                    note=f"hybrid (full text + vector, fused); baseline: a warmwire with the cache off; {note}"),
    ]


def print_result(result: dict) -> None:
    print(f"\nknowledge search, {result['notes']} notes ({result['load_seconds']} s to load), "
          f"{result['queries']} distinct queries, client to client (ms)")
    print(f"{'':<26}{'p50':>9}{'p99':>9}  target")
    for key, label, target in (("cached", "cached", TARGET_CACHED_P99_MS),
                               ("uncached_hybrid", "uncached hybrid", TARGET_UNCACHED_P99_MS),
                               ("cache_off", "cache off (baseline)", None)):
        row = result[key]
        goal = f"p99 < {target:g} ms {'met' if row['p99'] < target else 'NOT MET'}" if target else ""
        print(f"{label:<26}{row['p50']:>9.3f}{row['p99']:>9.3f}  {goal}")
    print(f"cache off / cached (p50): {result['ratio_cache_off_to_cached_p50']:.0f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{NOTES[True]} notes instead of {NOTES[False]}")
    parser.add_argument("--json", metavar="FILE", help="write the result as JSON")
    args = parser.parse_args(argv)
    result = run(args.quick)
    result.pop("raw")
    print_result(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
