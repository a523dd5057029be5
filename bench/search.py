"""Knowledge search, client to client over the real socket, on Thai and English notes.

- How uncached search grows: queries never asked before, at 1k, 10k and 100k notes (the
  notes are loaded through the search-cache and indexed in chroma between the points).
- The cache on a realistic trace: Zipf-like query popularity with a note written every
  WRITE_EVERY searches (a write empties the cache); hit rate and blended p50/p99.
  Baseline (the old knowledge server had no cache): the same trace, the same notes, a
  search-cache started with ``search.cache_size = 0``.

    python -m bench.search [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

import msgspec
import zmq

from proto.frames import Codec, KnowledgeIn, KnowledgeOut, LearnRequest, SearchRequest
from proto.sockets import connect_dealer
from supervisor.commands.status import fetch

from .harness import System, live_stats
from .progress import Progress, labelled, progress
from .stats import Row, latency_row, percentile

# Uncached search is measured as the notes grow; the Zipf trace runs at the last but one.
SCALES = {False: (1_000, 10_000, 100_000), True: (500, 1_000, 2_000)}
QUERIES = {False: 300, True: 60}
TRACE = {False: 2000, True: 300}
ZIPF_EXPONENT = 1.0
WRITE_EVERY = 100             # searches between two note writes in the trace
WARMUP = 20
LEARN_WINDOW = 64
TARGET_CACHED_P99_MS = 1.0
TARGET_UNCACHED_P99_MS = {10_000: 30.0, 100_000: 50.0}
TARGET_UNCACHED_P99_MS_DEFAULT = 30.0
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
        if stats.get("chroma") == "up" and not any(stats.get(busy) for busy in
                                                   ("unindexed", "checking_index", "pending_writes")):
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
            if answered % 100 == 0 or answered == len(notes):
                progress(answered - 1, len(notes))
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


def zipf_trace(queries: list[str], length: int, rng: random.Random) -> list[str | None]:
    """`length` searches drawn with Zipf-like popularity (the k-th most popular query is
    asked in proportion to 1 / k**ZIPF_EXPONENT), with a note write (None) every WRITE_EVERY."""
    weights = [1 / (rank + 1) ** ZIPF_EXPONENT for rank in range(len(queries))]
    trace: list[str | None] = []
    for query in rng.choices(queries, weights=weights, k=length):
        trace.append(query)
        if len(trace) % (WRITE_EVERY + 1) == WRITE_EVERY:
            trace.append(None)
    return trace


def replay(system: System, trace: list[str | None], show: Callable[[int, int], None]) -> dict:
    """Searches timed client to client; each None learns a new note (which empties the cache).
    ``repeats``: per search, whether its query was asked since the last write, i.e. whether a
    cache holding every query since then answers it (checked against the cache's own count)."""
    endpoint = system.config.endpoint("search")
    # Asked of the service itself: the supervisor's status is up to a probe interval old.
    before = live_stats(system.config, "search-cache")
    samples, repeats, notes, since_write = [], [], 0, set()
    for number, query in enumerate(trace):
        if query is None:
            load_notes(endpoint, [f"a note written during the trace, number {number}"], lambda *_: None)
            notes += 1
            since_write.clear()
        else:
            samples += measure(endpoint, [query], 1, lambda *_: None)
            repeats.append(query in since_write)
            since_write.add(query)
        if number % 50 == 0:
            show(number, len(trace))
    after = live_stats(system.config, "search-cache")
    hits = after["cache_hits"] - before["cache_hits"]
    asked = hits + after["cache_misses"] - before["cache_misses"]
    return {"samples": samples, "repeats": repeats, "hits": hits,
            "hit_rate": hits / asked if asked else 0.0, "writes": notes}


def at_repeats(trace: dict, samples: list[float]) -> list[float]:
    """The samples (of this trace, or of the same trace replayed elsewhere) at its repeated
    queries: its cache hits, where the cache's own count agrees that every repeat was a hit
    (else none: the split would be a guess)."""
    if sum(trace["repeats"]) != trace["hits"]:
        return []
    return [ms for ms, repeat in zip(samples, trace["repeats"]) if repeat]


def grow_to(system: System, notes: list[str], have: int, want: int, show: Progress) -> float:
    """Load notes[have:want] and wait until they are indexed; seconds it took."""
    started = time.monotonic()
    load_notes(system.config.endpoint("search"), notes[have:want], labelled(show, f"search: loading to {want} notes"))
    wait_until_indexed(system)
    return time.monotonic() - started


def run(quick: bool, show: Progress = progress) -> dict:
    rng = random.Random(SEED)
    scales = SCALES[quick]
    notes = generate_notes(scales[-1], rng)
    queries = generate_queries(QUERIES[quick] * (len(scales) + 1), rng)
    fresh = iter(queries[QUERIES[quick]:])  # never asked before: uncached wherever they run
    popular = queries[:QUERIES[quick]]
    trace = zipf_trace(popular, TRACE[quick], rng)
    warmup = [f"warm up query {n}" for n in range(WARMUP)]
    result: dict = {"scales": {}, "load_seconds": {}}
    home = Path(tempfile.mkdtemp(prefix="ww-bench-search-"))

    def uncached_at(system: System, size: int) -> None:
        asked = [next(fresh) for _ in range(QUERIES[quick])]
        result["scales"][size] = measure(system.config.endpoint("search"), asked, 1,
                                         labelled(show, f"search: uncached at {size} notes"))

    try:
        have = 0
        with System(home) as system:
            measure(system.config.endpoint("search"), warmup, 1, lambda *_: None)
            for size in scales[:-1]:
                result["load_seconds"][size] = grow_to(system, notes, have, size, show)
                have = size
                uncached_at(system, size)
            result["trace"] = replay(system, trace, labelled(show, f"search: Zipf trace at {have} notes"))
            result["trace_notes"] = have
        # The baseline (the old knowledge server had no cache): the same trace, the same notes,
        # a search-cache with the cache off. Then, still uncached, the largest scale.
        with System(home, WARMWIRE_SEARCH_CACHE_SIZE="0") as baseline:
            wait_until_indexed(baseline)
            measure(baseline.config.endpoint("search"), warmup, 1, lambda *_: None)
            result["trace_baseline"] = replay(baseline, trace, labelled(show, "search: same trace, cache off"))
            result["load_seconds"][scales[-1]] = grow_to(baseline, notes, have, scales[-1], show)
            uncached_at(baseline, scales[-1])
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(file=sys.stderr)
    return result


def bench_rows(system, quick: bool, progress) -> list[Row]:
    """The search rows of `./run.sh bench`. They run in warmwires of their own (the baseline
    needs one with the cache off over the same notes), not in the one given."""
    result = run(quick, progress)
    trace, base = result["trace"], result["trace_baseline"]
    about = (f"a Zipf-like trace ({len(trace['samples'])} searches over {QUERIES[quick]} queries, exponent "
             f"{ZIPF_EXPONENT:g}) with a note written every {WRITE_EVERY} searches (each write empties the "
             f"cache), {result['trace_notes']} notes, client to client; hit rate {trace['hit_rate']:.1%}")
    hits = at_repeats(trace, trace["samples"])
    cached = latency_row("search_cached", "ms", hits, at_repeats(trace, base["samples"]),
                         TARGET_CACHED_P99_MS,
                         note=(f"the cache hits of {about} ({len(hits)} searches whose query was asked since the "
                               "last write; the cache's own hit count agrees); baseline: the same searches "
                               "with the cache off (the old knowledge server had no cache)" if hits else
                               f"{about}: the cache counted {trace['hits']} hits where the trace repeated "
                               f"{sum(trace['repeats'])} queries, so the hits cannot be told apart"))
    blend = latency_row("search_trace", "ms", trace["samples"], base["samples"], TARGET_UNCACHED_P99_MS_DEFAULT,
                        note=(f"every search of {about}: hits and misses blended; target: the uncached one; "
                              "baseline: the same trace with the cache off"))
    blend.details = cached.details = {"hit_rate": trace["hit_rate"], "writes": trace["writes"],
                                      "baseline_hit_rate": base["hit_rate"]}
    rows = [cached, blend]
    for size, samples in result["scales"].items():
        scaled = latency_row(f"search_uncached_{size // 1000}k", "ms", samples, [],
                             TARGET_UNCACHED_P99_MS.get(size, TARGET_UNCACHED_P99_MS_DEFAULT),
                             note=(f"{size} notes, {len(samples)} queries never asked before (hybrid: full text + "
                                   f"vector, fused), client to client; loading took "
                                   f"{result['load_seconds'].get(size, 0):.0f} s; no baseline: the old knowledge "
                                   "server is not rebuilt here, so no ratio"))
        rows.append(scaled)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"up to {SCALES[True][-1]} notes")
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    args = parser.parse_args(argv)
    rows = bench_rows(None, args.quick, progress)
    for row in rows:
        print(f"{row.name}: p50 {row.p50 or math.nan:.3f} ms, p99 {row.p99 or math.nan:.3f} ms; {row.note}")
    if args.json:
        Path(args.json).write_text(json.dumps([msgspec.to_builtins(r) for r in rows], indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
