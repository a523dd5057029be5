"""Time the agent container the way the pool uses it:  python -m images.measure [--runs N]

- cold start: hardened container create+start -> signed `ready` seen by the host's inotify
  (docker SDK, as the pool-manager does it; and the `docker run` CLI for comparison)
- round trip: host writes a signed job -> runner -> signed `result` seen by the host
- local process: the same runner as a host process (the no-Docker fallback backend)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from images import build, launch
from proto import ipc

READY_TIMEOUT_S = 30
RESULT_TIMEOUT_S = 10
RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "agent", "runner.py")
# Bytecode is looked up under this (empty, read-only-root) prefix, so none is found.
NO_BYTECODE = {"PYTHONPYCACHEPREFIX": "/nonexistent-pycache"}
SAMPLE_JOB = {"text": "when is the dentist appointment?",
              "context": [{"title": "calendar", "text": "Dentist on Friday at 10am."}]}


def summary(samples_ms: list[float]) -> dict:
    s = sorted(samples_ms)
    p99 = s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))]
    return {"n": len(s), "median_ms": round(statistics.median(s), 2), "p99_ms": round(p99, 2),
            "min_ms": round(s[0], 2), "max_ms": round(s[-1], 2)}


def _cold_start(client, image: str, root: str, cli: bool,
                environment: dict | None = None) -> tuple[float, object]:
    lay, secret = launch.prepare_ipc(root)
    name = f"ww-measure-{uuid.uuid4().hex[:8]}"
    with launch.Watch(lay.from_agent, secret) as watch:
        t0 = time.perf_counter()
        if cli:
            subprocess.run(launch.docker_run_args(image, lay, name), check=True,
                           stdout=subprocess.DEVNULL)
            container = client.containers.get(name)
        else:
            options = launch.container_kwargs(image, lay, name=name)
            options["environment"] = {**options.get("environment", {}), **(environment or {})}
            container = client.containers.create(**options)
            container.start()
        try:
            watch.wait("ready", ipc.UNASSIGNED_CHAT, READY_TIMEOUT_S)
        except BaseException:
            container.remove(force=True)
            raise
        return (time.perf_counter() - t0) * 1000, (container, lay, secret)


def cold_starts_without_bytecode(image: str, runs: int) -> list[float]:
    """The old design's start, where the agent's code was compiled at every start: the same
    hardened container, told to look for bytecode where there is none, so every module of the
    runner is compiled from source before `ready`."""
    client = build.connect()
    tmp = tempfile.mkdtemp(prefix="ww-measure-nobytecode-")
    samples = []
    try:
        for i in range(runs):
            ms, (container, _, _) = _cold_start(client, image, f"{tmp}/{i}", cli=False,
                                                environment=NO_BYTECODE)
            container.remove(force=True)
            samples.append(ms)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return samples


def round_trips(lay, secret, jobs: int, chat="measure-chat") -> list[float]:
    out = []
    with launch.Watch(lay.from_agent, secret, skip_existing=True) as watch, \
            ipc.Writer(lay.to_agent, secret, chat) as writer:
        for i in range(jobs):
            t0 = time.perf_counter()
            writer.write("job", f"job-{i}", SAMPLE_JOB)
            msg = watch.wait("result", chat, RESULT_TIMEOUT_S)
            out.append((time.perf_counter() - t0) * 1000)
            assert msg.job == f"job-{i}" and msg.payload["offline"], msg
    return out


def measure_docker(runs: int, jobs: int, image: str) -> dict:
    client = build.connect()
    results = {}
    tmp = tempfile.mkdtemp(prefix="ww-measure-")
    try:
        for label, cli in (("cold_start_sdk", False), ("cold_start_cli", True)):
            samples = []
            for i in range(runs + 1):  # the first run warms the engine's caches: not counted
                ms, (container, lay, secret) = _cold_start(client, image,
                                                           f"{tmp}/{label}-{i}", cli)
                if i > 0:
                    samples.append(ms)
                if i == runs and not cli:
                    results["round_trip_container"] = summary(round_trips(lay, secret, jobs))
                container.remove(force=True)
            results[label] = summary(samples)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def measure_local(runs: int, jobs: int) -> dict:
    tmp = tempfile.mkdtemp(prefix="ww-measure-local-")
    samples, rt = [], []
    try:
        for i in range(runs):
            lay, secret = ipc.prepare(f"{tmp}/{i}")
            with launch.Watch(lay.from_agent, secret) as watch:
                t0 = time.perf_counter()
                proc = subprocess.Popen([sys.executable, RUNNER, "--ipc", str(lay.ipc_dir),
                                         "--key-file", str(lay.key_file)])
                try:
                    watch.wait("ready", ipc.UNASSIGNED_CHAT, READY_TIMEOUT_S,
                               alive=lambda: proc.poll() is None)
                    samples.append((time.perf_counter() - t0) * 1000)
                    if i == runs - 1:
                        rt = round_trips(lay, secret, jobs)
                finally:
                    proc.terminate()
                    proc.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"cold_start_local_process": summary(samples), "round_trip_local_process": summary(rt)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m images.measure", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=10, help="cold starts per variant (default 10)")
    p.add_argument("--jobs", type=int, default=50, help="round trips (default 50)")
    p.add_argument("--image", help="agent image (default: build/find it with images.build)")
    p.add_argument("--no-docker", action="store_true", help="only the local-process runner")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = p.parse_args(argv)
    results = measure_local(args.runs, args.jobs)
    if not args.no_docker:
        try:
            image = args.image or build.ensure_images(log=build.Progress(quiet=True)).agent
        except build.BuildError as e:
            print(f"images.measure: {e}", file=sys.stderr)
            return build.EXIT_NO_ENGINE if isinstance(e, build.NoEngine) else build.EXIT_FAILED
        results.update(measure_docker(args.runs, args.jobs, image))
        results["image"] = image
    for name, row in results.items():
        if isinstance(row, dict):
            print(f"{name:28s} median {row['median_ms']:8.2f} ms   p99 {row['p99_ms']:8.2f} ms"
                  f"   min {row['min_ms']:8.2f}   max {row['max_ms']:8.2f}   n={row['n']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
