"""How an agent asks the host for a model turn: signed files or a unix socket, measured.

    python -m images.measure_channel [--turns N] [--image IMAGE]

Issue 14 left the channel open: the signed, inotify-watched files every other message of an
agent already uses, or a per-agent unix socket bind-mounted into the container. Both run here
in the real hardened agent container (network none, read-only root, the agent's uid), with
the same payloads a tool loop's turn carries (a model request of a few kB out, a turn with a
tool call back), and each round trip is timed on the host:

- files: the host writes a signed `turn` into in/, the container wakes in inotify, verifies
  it, removes it and writes a signed `model` file into out/; the host wakes in inotify,
  verifies and removes it (what the pool-manager and the runner do, minus the gateway);
- socket: the host sends a JSON line on a unix socket in the agent's IPC folder and reads the
  container's JSON line back (no signature: the socket itself is the agent's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid

import inotify_simple

from images import build, launch
from images.measure import summary
from proto import ipc

CHAT = "measure-chat"
SOCKET_NAME = "turn.sock"
TIMEOUT_S = 10.0
WARMUP_TURNS = 20
# A tool loop's traffic: the turn carries text and a tool call, the request the whole
# conversation so far (a few kB by the third step).
TURN = {"text": "Let me look at the tests first. " * 8,
        "tool_calls": [{"id": "call-1", "name": "run", "input": {"command": "pytest -q tests/"}}]}
REQUEST = {"system": "You are a careful assistant. " * 20,
           "messages": [{"role": "user", "content": "please fix the failing test " * 40}] * 3}

# Runs in the container with its own Python: the image's proto/ipc.py and inotify_simple.
AGENT_SIDE = r"""
import ctypes, json, os, socket, sys
import inotify_simple
if inotify_simple._libc is None:
    inotify_simple._libc = ctypes.CDLL("libc.so.6", use_errno=True)
from proto import ipc
mode, turns, chat, request = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
if mode == "socket":
    conn = socket.socket(socket.AF_UNIX)
    conn.connect("/ipc/turn.sock")
    lines = conn.makefile("rb")
    for _ in range(turns):
        turn = json.loads(lines.readline())
        conn.sendall(json.dumps({"step": turn["step"], **request}).encode() + b"\n")
else:
    secret = ipc.Secret.from_file(ipc.CONTAINER_KEY_FILE)
    writer = ipc.Writer("/ipc/out", secret, chat)
    inbox = "/ipc/in"
    with inotify_simple.INotify() as notify:
        notify.add_watch(inbox, inotify_simple.flags.MOVED_TO | inotify_simple.flags.CLOSE_WRITE)
        writer.write("ready", "", {})
        answered = 0
        while answered < turns:
            for name in ipc.pending(inbox):
                turn = ipc.parse(os.path.join(inbox, name), secret, chat, inbox)
                ipc.remove(inbox, name)
                writer.write("model", turn.job, {"step": turn.payload["step"], **request})
                answered += 1
            if answered < turns:
                notify.read()
"""


def _start(client, image: str, lay: ipc.Layout, mode: str, turns: int):
    options = launch.container_kwargs(image, lay, name=f"ww-channel-{uuid.uuid4().hex[:8]}")
    options.update(entrypoint=["python3", "-S", "-c", AGENT_SIDE],
                   command=[mode, str(turns), CHAT, json.dumps(REQUEST)])
    container = client.containers.create(**options)
    container.start()
    return container


def _next_file(notify: inotify_simple.INotify, folder: str, secret: ipc.Secret, kind: str) -> ipc.Message:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        for name in ipc.pending(folder):
            message = ipc.parse(os.path.join(folder, name), secret, ipc.ANY_CHAT, folder)
            ipc.remove(folder, name)
            if message.kind == kind:
                return message
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {kind} file from the agent within {TIMEOUT_S:g} s")
        notify.read(timeout=int(TIMEOUT_S * 1000))


def file_round_trips(client, image: str, root: str, turns: int) -> list[float]:
    lay, secret = launch.prepare_ipc(root)
    out = os.fspath(lay.from_agent)
    samples = []
    with inotify_simple.INotify() as notify, ipc.Writer(lay.to_agent, secret, CHAT) as writer:
        notify.add_watch(out, launch.WATCH_MASK)
        container = _start(client, image, lay, "files", turns + WARMUP_TURNS)
        try:
            _next_file(notify, out, secret, "ready")
            for step in range(turns + WARMUP_TURNS):
                started = time.perf_counter()
                writer.write("turn", f"job#{step}", {"step": step, **TURN})
                answer = _next_file(notify, out, secret, "model")
                if step >= WARMUP_TURNS:
                    samples.append((time.perf_counter() - started) * 1000)
                assert answer.payload["step"] == step, answer
        finally:
            container.remove(force=True)
    return samples


def socket_round_trips(client, image: str, root: str, turns: int) -> list[float]:
    lay, _ = launch.prepare_ipc(root)
    path = os.path.join(lay.ipc_dir, SOCKET_NAME)
    samples = []
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        os.chmod(path, 0o666)  # the folder (0700, the agent's) is the fence, as for the files
        server.listen(1)
        server.settimeout(TIMEOUT_S)
        container = _start(client, image, lay, "socket", turns + WARMUP_TURNS)
        try:
            conn, _ = server.accept()
            with conn, conn.makefile("rb") as lines:
                for step in range(turns + WARMUP_TURNS):
                    started = time.perf_counter()
                    conn.sendall(json.dumps({"step": step, **TURN}).encode() + b"\n")
                    answer = json.loads(lines.readline())
                    if step >= WARMUP_TURNS:
                        samples.append((time.perf_counter() - started) * 1000)
                    assert answer["step"] == step, answer
        finally:
            container.remove(force=True)
    return samples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m images.measure_channel",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=2000, help="round trips per channel (default 2000)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of each channel, so both meet the same load (default 3)")
    parser.add_argument("--image", help="agent image (default: build/find it with images.build)")
    args = parser.parse_args(argv)
    try:
        image = args.image or build.ensure_images(log=build.Progress(quiet=True)).agent
    except build.BuildError as exc:
        print(f"images.measure_channel: {exc}", file=sys.stderr)
        return build.EXIT_NO_ENGINE if isinstance(exc, build.NoEngine) else build.EXIT_FAILED
    client = build.connect()
    samples: dict[str, list[float]] = {"signed files": [], "unix socket": []}
    tmp = tempfile.mkdtemp(prefix="ww-channel-")
    try:
        for round_ in range(args.rounds):
            for name, measure in (("signed files", file_round_trips), ("unix socket", socket_round_trips)):
                print(f"round {round_ + 1}/{args.rounds}: {name}, {args.turns} turns", file=sys.stderr)
                samples[name] += measure(client, image, f"{tmp}/{name[:4]}-{round_}", args.turns)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = {name: summary(values) for name, values in samples.items()}
    for name, row in rows.items():
        print(f"{name:14s} median {row['median_ms']:6.3f} ms   p99 {row['p99_ms']:6.3f} ms"
              f"   max {row['max_ms']:7.2f} ms   n={row['n']}")
    ratio = rows["signed files"]["median_ms"] / rows["unix socket"]["median_ms"]
    print(f"signed files / unix socket, median: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
