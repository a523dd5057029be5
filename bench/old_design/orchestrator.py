"""The old design, rebuilt: the orchestrator process (NanoClaw v1 / JellyCore before Phase 1).

    python -m bench.old_design --home DIR --image IMAGE [--slots 5]

- a message loop that polls SQLite every 2 s for new messages (a channel process writes them);
- SQLite in rollback-journal mode with a 5 s busy timeout, written by more than one process
  (the channel inserts messages, this process marks them and writes replies);
- every message is a container job: one cold `docker run` per job, whose entry point
  prepares its code at each start (bench/old_design/image/entry.sh);
- an IPC reader that lists its folders every second (no inotify);
- no search cache (it searches nothing: the job carries no knowledge passages);
- a fixed limit of 5 containers, an unbounded queue, and no notices: a user whose message
  waits is told nothing.

Each reply is "sent" as one JSON line on stdout (the channel's send), with the times each
stage happened (time.time(), the host clock every container shares):
{"id", "written", "seen", "started", "ready", "result", "result_seen", "replied", "error"}.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from images.launch import agent_user, prepare_ipc
from proto import ipc

from . import store

MESSAGE_POLL = 2.0      # the old message loop's period
IPC_POLL = 1.0          # the old IPC reader's period
SLOTS = 5               # the old fixed container limit
CONTAINER_MEMORY = "256m"
NAME_PREFIX = "wwold"
LABEL = "warmwire-bench.old-design"
RUN_TIMEOUT = 300.0     # a container that takes longer is killed (never reached in the bench)


class Orchestrator:
    def __init__(self, home: Path, image: str, slots: int = SLOTS) -> None:
        self.home = home
        self.image = image
        self.slots = slots
        self.ipc_root = home / "ipc"
        self.ipc_root.mkdir(parents=True, exist_ok=True)
        self.db = store.connect(home / store.DATABASE)
        store.create(self.db)
        self.jobs: queue.Queue = queue.Queue()   # unbounded, as it was
        self.active: dict[str, dict] = {}          # job id -> its record, while it runs
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.out_lock = threading.Lock()
        self.counter = 0

    # -- the 2 s message loop ------------------------------------------------------------
    def message_loop(self) -> None:
        while not self.stopping.wait(MESSAGE_POLL):
            seen = time.time()
            rows = store.take_new(self.db, self.lock)
            for message_id, chat, text, written in rows:
                self.jobs.put({"id": message_id, "chat": chat, "text": text, "written": written,
                               "seen": seen})

    # -- 5 fixed slots, one cold container per job ---------------------------------------
    def slot(self) -> None:
        while not self.stopping.is_set():
            try:
                job = self.jobs.get(timeout=MESSAGE_POLL)
            except queue.Empty:
                continue
            self.run_container(job)

    def run_container(self, job: dict) -> None:
        with self.lock:
            self.counter += 1
            name = f"{NAME_PREFIX}-{os.getpid()}-{self.counter}"
        root = self.ipc_root / name
        layout, secret = prepare_ipc(root)
        with ipc.Writer(layout.to_agent, secret, job["chat"]) as writer:
            writer.write("job", job["id"], {"text": job["text"], "context": []})
            writer.write("stop", "", {})  # the old container ran one job and exited
        job.update(secret=secret, out=layout.from_agent, started=time.time())
        with self.lock:
            self.active[job["id"]] = job
        uid, gid = agent_user()
        args = ["docker", "run", "--rm", "--name", name, "--label", LABEL, "--user", f"{uid}:{gid}",
                "--network", "none", "--memory", CONTAINER_MEMORY,
                "-v", f"{layout.ipc_dir}:{ipc.CONTAINER_IPC_DIR}:rw",
                "-v", f"{layout.key_file}:{ipc.CONTAINER_KEY_FILE}:ro", self.image]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT)
            failed = proc.returncode != 0 and f"docker run exited {proc.returncode}: {proc.stderr.strip()[-300:]}"
        except subprocess.TimeoutExpired:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
            failed = "the container ran too long"
        # Wait for the 1 s reader to have seen the result before the folder goes away.
        while not self.stopping.is_set() and job["id"] in self.active and not failed:
            time.sleep(IPC_POLL / 10)
        with self.lock:
            still = self.active.pop(job["id"], None)
        if still is not None and not self.stopping.is_set():
            self.send(job, error=failed or "no result")
        shutil.rmtree(root, ignore_errors=True)

    # -- the 1 s IPC reader ---------------------------------------------------------------
    def ipc_reader(self) -> None:
        while not self.stopping.wait(IPC_POLL):
            os.listdir(self.ipc_root)  # the old reader listed its whole IPC folder every time
            with self.lock:
                running = list(self.active.values())
            for job in running:
                self.read_folder(job)

    def read_folder(self, job: dict) -> None:
        try:
            names = ipc.pending(job["out"])
        except OSError:
            return
        for name in names:
            kind = ipc.NAME_RE.match(name).group(2)
            if kind not in ("ready", "result", "error") or kind in job:
                continue
            try:
                message = ipc.parse(os.path.join(job["out"], name), job["secret"], ipc.ANY_CHAT, job["out"])
            except ipc.IpcError:
                continue
            job[kind] = message.ts
            if kind in ("result", "error"):
                job["result_seen"] = time.time()
                with self.lock:
                    self.active.pop(job["id"], None)
                error = "" if kind == "result" else str(message.payload.get("error", "failed"))
                store.save_reply(self.db, self.lock, job["id"], str(message.payload.get("text", "")), error)
                self.send(job, error=error)

    def send(self, job: dict, error: str = "") -> None:
        record = {key: job.get(key) for key in ("id", "written", "seen", "started", "ready", "result",
                                                "result_seen")}
        record.update(replied=time.time(), error=error)
        with self.out_lock:
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()

    def serve(self) -> None:
        threads = [threading.Thread(target=self.message_loop, daemon=True),
                   threading.Thread(target=self.ipc_reader, daemon=True)]
        threads += [threading.Thread(target=self.slot, daemon=True) for _ in range(self.slots)]
        for thread in threads:
            thread.start()
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        while not self.stopping.wait(MESSAGE_POLL):
            pass
        left = self.running_containers()
        if left:
            subprocess.run(["docker", "rm", "-f", *left], capture_output=True)

    def running_containers(self) -> list[str]:
        found = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={LABEL}",
                                "--filter", f"name={NAME_PREFIX}-{os.getpid()}-"],
                               capture_output=True, text=True)
        return found.stdout.split()
