"""Row gateway_overhead: the provider's first streamed byte of text → the client's first
``delta`` notice.

warmwire: a second warmwire in its own temporary home, whose model gateway talks to a
scripted provider on loopback (``bench/fake_provider.py``, Anthropic's streaming format). A
DEALER client sends container-light messages one at a time; the provider notes the
monotonic time (CLOCK_MONOTONIC, one clock for every process here) just before it writes
its first text event, the client the time it receives the first delta. Timed after WARMUP
messages and once the pool has started the agents that replace the ones the chats took
(``harness.settle_pool``). The path between:
provider → gateway (httpx, asyncio thread) → router (the deltas socket) → client.
Baseline, in the same run: a client reading the same provider's stream directly (httpx, no
warmwire), provider's first text byte → that client's first text line: what the HTTP stream
alone costs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

import httpx
import zmq

from proto.frames import Chat, ClientOut, Codec, Notice, Reply
from proto.sockets import connect_dealer

from .fake_provider import Answer, serve_in_process
from .harness import System, settle_pool
from .stats import Row, latency_row

TEXT = "how many legs does a spider have?"  # container-light
FULL_SAMPLES, QUICK_SAMPLES = 400, 40
WARMUP = 10
CHATS = 4                 # agents in use, each kept for its chat's follow-ups
TARGET_P99_MS = 5.0
ANSWER_TIMEOUT_MS = 30_000
PROVIDER_TIMEOUT_S = 30.0
KEY = "sk-bench-" + uuid.uuid4().hex
# The provider answers like a model: its first token after a pause (real ones take hundreds
# of ms; by then the job's start — IPC files, job rows — is over, as it is here), then a
# token every few ms. Without the pause the first delta raced the job's own start-up work for
# the 2 cores, which is not the gateway's overhead.
ANSWER = Answer(pieces=("Eight", " legs", ": spiders", " are", " arachnids", "."),
                first_delay=0.05, piece_delay=0.005)


class Provider:
    """The scripted provider in a process of its own; ``first_byte()``: the monotonic time
    at which it began streaming text for the call it answered last."""

    def __init__(self, answer=ANSWER, first_bytes: bool = True) -> None:
        """answer: how every call is answered (an Answer, or a ToolLoop); first_bytes: the
        caller reads every call's first-byte time (first_byte())."""
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=serve_in_process, args=(KEY, child, answer, first_bytes), daemon=True)
        self.process.start()
        self.url = self._receive()

    def _receive(self):
        if not self.connection.poll(PROVIDER_TIMEOUT_S):
            raise RuntimeError("the scripted provider did not answer")
        return self.connection.recv()

    def first_byte(self) -> float:
        return self._receive()

    def stop(self) -> None:
        self.process.kill()
        self.process.join()


def _warmwire_samples(system: System, provider: Provider, count: int,
                      progress: Callable[[int, int], None]) -> list[float]:
    codec = Codec(ClientOut)
    sock = connect_dealer(zmq.Context.instance(), system.config.router.frontend)
    samples = []
    try:
        for number in range(WARMUP + count):
            if number == WARMUP:  # the warm-up bound an agent to each chat: let the pool replace them
                settle_pool(system.config)
            message_id = uuid.uuid4().hex
            sock.send(codec.encode(Chat(id=message_id, chat=f"bench-gateway-{number % CHATS}",
                                        sender="bench", text=TEXT)))
            first_delta = None
            while True:
                if not sock.poll(ANSWER_TIMEOUT_MS):
                    raise RuntimeError("no answer from warmwire within 30 s")
                frame = codec.decode(sock.recv())
                if frame.id != message_id:
                    continue
                if isinstance(frame, Notice) and frame.kind == "delta" and first_delta is None:
                    first_delta = time.monotonic()
                if isinstance(frame, Reply) or (isinstance(frame, Notice) and frame.kind not in
                                                ("queued", "progress", "delta")):
                    break
            if first_delta is None:
                raise RuntimeError(f"no streamed model answer: {frame}")
            first_byte = provider.first_byte()
            if number >= WARMUP:
                samples.append((first_delta - first_byte) * 1000)
            progress(number, WARMUP + count)
    finally:
        sock.close()
    return samples


def _direct_samples(provider: Provider, count: int) -> list[float]:
    samples = []
    body = {"model": "bench", "max_tokens": 16, "stream": True,
            "messages": [{"role": "user", "content": TEXT}]}
    with httpx.Client() as client:
        for number in range(WARMUP + count):
            with client.stream("POST", f"{provider.url}/v1/messages", json=body,
                               headers={"x-api-key": KEY}) as response:
                first = None
                for line in response.iter_lines():
                    if first is None and line.startswith("data:") and "text_delta" in line:
                        first = time.monotonic()
            first_byte = provider.first_byte()
            if number >= WARMUP:
                samples.append((first - first_byte) * 1000)
    return samples


@contextlib.contextmanager
def provider_system(answer, backend: str, first_bytes: bool = True):
    """A scripted provider in its own process, and a warmwire whose gateway talks to it
    (``backend``: where its agents run; ``first_bytes``: see Provider). Yields (provider, system)."""
    provider = Provider(answer, first_bytes)
    folder = Path(tempfile.mkdtemp(prefix="ww-bench-key-"))
    key_file = folder / "provider.key"
    key_file.write_text(KEY)
    key_file.chmod(0o600)
    try:
        with System(WARMWIRE_AGENTS_PROVIDER="anthropic", WARMWIRE_AGENTS_PROVIDER_URL=provider.url,
                    WARMWIRE_AGENTS_API_KEY_FILE=str(key_file), WARMWIRE_POOL_BACKEND=backend) as system:
            yield provider, system
    finally:
        provider.stop()
        key_file.unlink(missing_ok=True)
        folder.rmdir()


def run(system: System | None, quick: bool, progress) -> Row:
    """system: the benchmark's main warmwire (its pool backend is used here too)."""
    count = QUICK_SAMPLES if quick else FULL_SAMPLES
    with provider_system(ANSWER, system.config.pool.backend if system else "auto") as (provider, gateway_system):
        samples = _warmwire_samples(gateway_system, provider, count,
                                    lambda done, total: progress("gateway_overhead", done, total))
        baseline = _direct_samples(provider, count)
    return latency_row("gateway_overhead", "ms", samples, baseline, TARGET_P99_MS,
                       note="provider's first streamed text byte -> client's first delta notice "
                            "(baseline: the same stream read directly, without warmwire); the provider's first token "
                            f"comes {ANSWER.first_delay * 1000:g} ms after the request, then one every "
                            f"{ANSWER.piece_delay * 1000:g} ms")


if __name__ == "__main__":  # python -m bench.gateway [--quick]: this row alone
    import sys

    from .progress import progress as show

    row = run(None, "--quick" in sys.argv, show)
    print(f"\n{row.name}: p50 {row.p50:.3f} ms, p99 {row.p99:.3f} ms; direct stream p50 "
          f"{row.baseline_p50:.3f} ms, p99 {row.baseline_p99:.3f} ms; {row.target}: "
          f"{'met' if row.met else 'NOT MET'} ({row.samples} samples)")
