"""Row tool_step: an agent's tool step, from the model's tool call arriving (whole) at the
model gateway to the job's next model request leaving it for the provider, less the tool's
own run time (which the agent reports with its request).

The path measured: gateway → pool-manager → a signed `turn` file into the agent's folder →
the runner woken by inotify → the tool runs (subtracted) → a signed `model` file out → the
pool-manager woken by inotify → the gateway. The scripted provider (its own process) asks
for `list_files` a few times per job, then answers; the gateway keeps the figures.
Before them, one warm-up job per chat, answered without tools, binds each chat's agent; the
steps are timed once the pool has started the agents that replace them (those starts are
CPU-heavy start-up work, not the tool step: `harness.settle_pool`).
No baseline: the old design's agent had no tools, so there is nothing old to run.
"""

from __future__ import annotations

import uuid

import zmq

from proto.frames import Chat, ClientOut, Codec, Reply
from proto.sockets import connect_dealer

from .fake_provider import ToolLoop
from .gateway import provider_system
from .harness import System, live_stats, settle_pool
from .stats import Row

# A container-full message: that tier has the file tools.
TEXT = "Please debug this Python traceback: KeyError 'port' in parse_config() at line 42"
WARMUP_TEXT = "Please debug this warm-up traceback: KeyError 'host' in main()"  # answered without tools
CHATS = 4
ROUNDS = 5                       # tool steps per job
FULL_JOBS, QUICK_JOBS = 60, 12
TARGET_P99_MS = 5.0
ANSWER_TIMEOUT_MS = 60_000
INTERIM = ("queued", "progress", "delta")


def _jobs(system: System, count: int, progress, text: str = TEXT) -> None:
    codec = Codec(ClientOut)
    sock = connect_dealer(zmq.Context.instance(), system.config.router.frontend)
    try:
        for number in range(count):
            message_id = uuid.uuid4().hex
            sock.send(codec.encode(Chat(id=message_id, chat=f"bench-tools-{number % CHATS}", sender="bench", text=text)))
            while True:
                if not sock.poll(ANSWER_TIMEOUT_MS):
                    raise RuntimeError("no answer from warmwire within 60 s")
                frame = codec.decode(sock.recv())
                if frame.id == message_id and (isinstance(frame, Reply) or frame.kind not in INTERIM):
                    break
            if not isinstance(frame, Reply) or frame.text != "done":
                raise RuntimeError(f"the agent's tool loop did not finish: {frame}")
            progress("tool_step", number, count)
    finally:
        sock.close()


def run(system: System | None, quick: bool, progress) -> Row:
    """system: the benchmark's main warmwire (its pool backend is used here too)."""
    loop = ToolLoop(tool_call={"name": "list_files", "arguments": {"path": "."}}, rounds=ROUNDS, plain_for=WARMUP_TEXT)
    with provider_system(loop, system.config.pool.backend if system else "auto", first_bytes=False) as (_, tools_system):
        _jobs(tools_system, CHATS, lambda *_: None, WARMUP_TEXT)
        settled = settle_pool(tools_system.config)
        _jobs(tools_system, QUICK_JOBS if quick else FULL_JOBS, progress)
        step = live_stats(tools_system.config, "model-gateway")["tool_step"]
    p50, p99 = step["p50_ms"], step["p99_ms"]
    return Row(name="tool_step", unit="ms", p50=p50, p99=p99, baseline_p50=float("nan"), baseline_p99=None,
               ratio=float("nan"), target=f"p99 < {TARGET_P99_MS:g} ms", met=p99 is not None and p99 < TARGET_P99_MS,
               samples=step["steps"], baseline_samples=0,
               note="the model's tool call at the gateway -> the job's next model request leaving it, "
                    f"less the tool's own run time; {CHATS} chats, {ROUNDS} steps a job, after one warm-up job per chat "
                    f"and the pool's start of their replacement agents ({settled:.1f} s); "
                    "no baseline: the old design's agent had no tools")


if __name__ == "__main__":  # python -m bench.tools [--quick]: this row alone
    import sys

    from .progress import progress as show

    row = run(None, "--quick" in sys.argv, show)
    print(f"\n{row.name}: p50 {row.p50:.3f} ms, p99 {row.p99:.3f} ms over {row.samples} steps; "
          f"{row.target}: {'met' if row.met else 'NOT MET'}")
