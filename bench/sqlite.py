"""SQLite under several writers and readers: rows/s, commit latency and errors.

warmwire: the store-writer service in a process of its own (its own temporary home, the
configured pragmas), WRITERS client processes sending SaveExchange frames (a message and its
answer: 2 rows each) over its socket, up to WINDOW each in flight, each timed from its send
to the Committed frame naming it (client -> commit -> ack); READERS processes read the chats'
recent turns read-only meanwhile (one read per READ_INTERVAL each), as the router does. Measured with synchronous=NORMAL and
FULL (FULL: one fsync per group commit, so an acknowledged message survives power loss).
Baseline: the old design's database (bench/old_design/store.py: rollback journal, 5 s busy
timeout) written by WRITERS processes at once, each writing a message and its answer in one
transaction, one at a time, as the old processes did, and READERS processes polling it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import zmq

from proto.config import load
from proto.db import open_readonly
from proto.frames import Codec, Committed, Reply, SaveExchange, StoredMessage, StoreIn, StoreOut
from proto.metrics import percentile
from proto.sockets import connect_dealer

from .harness import live_stats
from .old_design import store as old_store
from .stats import Row

WRITERS = 4
READERS = 4
WINDOW = 32                     # frames each warmwire writer keeps in flight
ROWS_PER_WRITE = 2              # a message and its answer
DURATION = {True: 2.0, False: 10.0}
TARGET_ROWS_PER_S = 20000
START_DEADLINE = 30.0
ANSWER_TIMEOUT_MS = 30_000
SAMPLE_EVERY = 10               # latency samples kept per writer: every 10th write
CHATS = 100
# Each reader reads this often (a busy router reading chats' history), not in a tight loop:
# on 2 cores, readers spinning flat out measure the CPU they take from the writer, not SQLite.
READ_INTERVAL = 0.001
TEXT = "a message of ordinary length for a personal assistant " * 2
READ_QUERY = "SELECT count(*) FROM (SELECT id FROM messages WHERE chat = ? ORDER BY received_at DESC LIMIT 12)"
OLD_READ_QUERY = "SELECT id FROM messages WHERE state = 'new' ORDER BY rowid"


def _exchange(writer: int, number: int) -> SaveExchange:
    message_id = f"{writer}-{number}-{uuid.uuid4().hex[:8]}"
    chat = f"chat-{number % CHATS}"
    return SaveExchange(message=StoredMessage(id=message_id, chat=chat, sender="bench", text=TEXT, tier="inline",
                                              received_at=time.time()),
                        answer=Reply(id=message_id, chat=chat, tier="inline", text="hello"))


def _warmwire_writer(endpoint: str, writer: int, until: float, out) -> None:
    requests, answers = Codec(StoreIn), Codec(StoreOut)
    sock = connect_dealer(zmq.Context.instance(), endpoint)
    sent_at: dict[str, float] = {}
    done = errors = number = 0
    latencies = []
    while time.time() < until or sent_at:
        while time.time() < until and len(sent_at) < WINDOW:
            frame = _exchange(writer, number)
            number += 1
            sent_at[frame.key] = time.perf_counter()
            sock.send(requests.encode(frame))
        if not sock.poll(ANSWER_TIMEOUT_MS):
            errors += len(sent_at)
            break
        answer = answers.decode(sock.recv())
        now = time.perf_counter()
        for key in answer.keys:
            started = sent_at.pop(key, None)
            if started is None:
                continue
            if isinstance(answer, Committed):
                done += 1
                if done % SAMPLE_EVERY == 0:
                    latencies.append((now - started) * 1000)
            else:
                errors += 1
    sock.close()
    out.put(("writer", done * ROWS_PER_WRITE, errors, latencies))


def _old_writer(path: str, writer: int, until: float, out) -> None:
    conn = old_store.connect(Path(path))
    done = errors = number = 0
    latencies = []
    while time.time() < until:
        number += 1
        message_id = f"{writer}-{number}-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO messages (id, chat, text, written, state) VALUES (?, ?, ?, ?, 'answered')",
                         (message_id, f"chat-{number % CHATS}", TEXT, time.time()))
            conn.execute("INSERT INTO replies VALUES (?, ?, '', ?)", (message_id, "hello", time.time()))
            conn.execute("COMMIT")
            done += 1
            if done % SAMPLE_EVERY == 0:
                latencies.append((time.perf_counter() - started) * 1000)
        except Exception:  # "database is locked" once the 5 s busy timeout runs out
            errors += 1
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    out.put(("writer", done * ROWS_PER_WRITE, errors, latencies))


def _reader(path: str, old: bool, until: float, out) -> None:
    conn = old_store.connect(Path(path)) if old else open_readonly(Path(path), load({}).store.busy_timeout_ms)
    reads = errors = 0
    while time.time() < until:
        try:
            if old:
                conn.execute(OLD_READ_QUERY).fetchall()
            else:
                conn.execute(READ_QUERY, (f"chat-{reads % CHATS}",)).fetchone()
            reads += 1
        except Exception:
            errors += 1
        time.sleep(READ_INTERVAL)
    out.put(("reader", reads, errors, []))


def _parties(writer, writer_arg: str, path: str, old: bool, duration: float) -> dict:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    until = time.time() + duration
    procs = [ctx.Process(target=writer, args=(writer_arg, n, until, out)) for n in range(WRITERS)]
    procs += [ctx.Process(target=_reader, args=(path, old, until, out)) for _ in range(READERS)]
    for proc in procs:
        proc.start()
    results = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    latencies = [ms for r in results for ms in r[3]]
    return {"rows_per_s": sum(r[1] for r in results if r[0] == "writer") / duration,
            "errors": sum(r[2] for r in results),
            "reads_per_s": sum(r[1] for r in results if r[0] == "reader") / duration,
            "commit_p50_ms": percentile(latencies, 0.5), "commit_p99_ms": percentile(latencies, 0.99),
            "latencies": latencies}


def measure_store_writer(synchronous: str, duration: float) -> dict:
    """A store-writer of its own in a temporary home, loaded by writers and readers."""
    with tempfile.TemporaryDirectory(prefix="ww-bench-store-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WARMWIRE_")}
        env.update(WARMWIRE_HOME=home, WARMWIRE_STORE_SYNCHRONOUS=synchronous)
        config = load(env)
        proc = subprocess.Popen([sys.executable, "-m", "services.store_writer"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + START_DEADLINE
            while not config.database.exists() or proc.poll() is not None:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the store-writer did not start (see {config.log_dir})")
                time.sleep(0.05)
            live_stats(config, "store-writer")  # it answers: the socket is bound
            result = _parties(_warmwire_writer, config.endpoint("store"), str(config.database), False, duration)
            result["batches"] = live_stats(config, "store-writer")["batches"]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
    return result


def measure_old(duration: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="ww-bench-oldsql-") as folder:
        path = str(Path(folder) / old_store.DATABASE)
        conn = old_store.connect(Path(path))
        old_store.create(conn)
        conn.close()
        return _parties(_old_writer, path, path, True, duration)


def _row(name: str, new: dict, old: dict, synchronous: str, note: str) -> Row:
    return Row(
        name=name, unit="rows/s", p50=new["rows_per_s"], p99=None, baseline_p50=old["rows_per_s"], baseline_p99=None,
        ratio=new["rows_per_s"] / old["rows_per_s"] if old["rows_per_s"] else float("inf"),
        target=f"0 errors, >= {TARGET_ROWS_PER_S} rows/s",
        met=new["errors"] == 0 and new["rows_per_s"] >= TARGET_ROWS_PER_S,
        samples=len(new["latencies"]), baseline_samples=len(old["latencies"]),
        note=(f"synchronous={synchronous}; {WRITERS} writer processes ({WINDOW} in flight each) + {READERS} "
              f"readers through the store-writer; commit latency (send -> ack) p50 {new['commit_p50_ms'] or 0:.1f} / "
              f"p99 {new['commit_p99_ms'] or 0:.1f} ms, errors {new['errors']}, reads/s {new['reads_per_s']:.0f}; "
              f"baseline (rollback journal, 5 s busy timeout, {WRITERS} writer processes one transaction at a time "
              f"+ {READERS} readers): commit p50 {old['commit_p50_ms'] or 0:.1f} / p99 {old['commit_p99_ms'] or 0:.1f} "
              f"ms, errors {old['errors']}, reads/s {old['reads_per_s']:.0f}{note}"),
        details={key: value for side, figures in (("", new), ("baseline_", old)) for key, value in
                 ((f"{side}{k}", v) for k, v in figures.items() if k != "latencies")},
        distribution=new["latencies"], baseline_distribution=old["latencies"])


def run(system, quick: bool, progress) -> list[Row]:
    duration = DURATION[quick]
    progress("sqlite: store-writer, synchronous=NORMAL", 0, 3)
    normal = measure_store_writer("NORMAL", duration)
    progress("sqlite: store-writer, synchronous=FULL", 1, 3)
    full = measure_store_writer("FULL", duration)
    progress("sqlite: old design's database (baseline)", 2, 3)
    old = measure_old(duration)
    progress("sqlite: done", 2, 3)
    default = system.config.store.synchronous
    return [_row("sqlite_concurrency", full if default == "FULL" else normal, old, default, " (the default)"),
            _row("sqlite_concurrency_" + ("normal" if default == "FULL" else "full"),
                 normal if default == "FULL" else full, old, "NORMAL" if default == "FULL" else "FULL", "")]
