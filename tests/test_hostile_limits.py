"""Code that attacks the machine from inside a real warm agent container: the container's
limits hold (no network, pids, memory, a flood of files) and the pool-manager replaces the
container.

Docker only (the local backend is a process sandbox without these limits, and `status`
says so). The code runs with the Docker SDK's exec, as the container's own user, exactly
as code an agent ran would. The IPC sweep runs every second here, so a container that hit
its process limit (which no event reports) is seen quickly.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from conftest import wait_for
from proto import ipc
from proto.config import load
from test_hostile_agents import (
    MB, READY_DEADLINE, RSS_GROWTH_LIMIT, as_agent, bound_chat,
    container_of, pool_manager, ready_agent, start_system, still_served, wait_replaced,
)
from test_pool import pool

pytestmark = [pytest.mark.slow, pytest.mark.hostile]
SWEEP_SECONDS = "1"
EXIT_KILLED = 137  # 128 + SIGKILL: the kernel's OOM killer
FLOOD_FILES = 100_000
LINKS_PER_FILE = 50_000  # ext4 allows 65,000 links to one file

NETWORK_PROBE = """
import socket
tried = []
for host, port in (("1.1.1.1", 53), ("8.8.8.8", 443), ("172.17.0.1", 2375)):
    try:
        socket.create_connection((host, port), timeout=2).close()
        tried.append(f"{host}: CONNECTED")
    except OSError as error:
        tried.append(f"{host}: {error.strerror or error}")
try:
    socket.getaddrinfo("example.com", 443)
    tried.append("dns: RESOLVED")
except OSError as error:
    tried.append(f"dns: {error}")
print("; ".join(tried))
print("interfaces:", " ".join(sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:])))
"""

FORK_BOMB = """
import os, time
children = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        children += 1
except OSError as error:
    print(children, error.strerror)
"""

MEMORY_EATER = """
chunks = []
while True:
    chunks.append(bytearray(16 << 20))  # touched: bytearray zero-fills
"""


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    system = start_system("docker", tmp_path_factory.mktemp("hostile-limits"),
                          WARMWIRE_POOL_SWEEP_INTERVAL=SWEEP_SECONDS)
    yield system
    system.stop()


def test_the_network_is_off_inside_an_agent(system):
    root = ready_agent(system)
    result = as_agent(system, root, f"python3 -c '{NETWORK_PROBE}'")
    output = result.output.decode()
    print(f"\n[network] {output.strip()}")
    assert "CONNECTED" not in output and "RESOLVED" not in output
    assert output.strip().endswith("interfaces: lo")
    assert container_of(system, root).attrs["HostConfig"]["NetworkMode"] == "none"


def test_a_fork_bomb_hits_the_pids_limit_and_its_container_is_replaced(system):
    bystander, _ = bound_chat(system, "bystander-forks")
    retired = pool(system)["pool"]["retired"]
    root = ready_agent(system)
    result = as_agent(system, root, f"python3 -c '{FORK_BOMB}'")
    children, error = result.output.decode().split(maxsplit=1)
    print(f"\n[fork bomb] {children} processes, then: {error.strip()}")
    assert int(children) < load({}).pool.pids and "unavailable" in error
    wait_replaced(system, root, retired)
    assert "reached its process limit" in system.logs()
    still_served(system, "bystander-forks", bystander)


def test_an_agent_that_eats_memory_is_killed_and_replaced(system):
    bystander, _ = bound_chat(system, "bystander-memory")
    retired = pool(system)["pool"]["retired"]
    root = ready_agent(system)
    result = as_agent(system, root, f"python3 -c '{MEMORY_EATER}'")
    print(f"\n[memory] the eater exited with {result.exit_code}")
    assert result.exit_code == EXIT_KILLED
    wait_replaced(system, root, retired)
    assert "ran out of memory" in system.logs()
    still_served(system, "bystander-memory", bystander)
    wait_for(lambda: pool(system)["pool"]["ready"] >= 1, READY_DEADLINE, "a ready agent at the end")


def test_a_flood_of_100000_files_neither_stalls_nor_bloats_the_pool_manager(system):
    """100,000 files appear at once (a folder renamed in), then an agent floods file by file
    from inside its container; meanwhile another chat is answered and the pool-manager's
    memory stays flat. (Docker only: the reader is the same for both backends, and only a
    container is killed together with the flood it runs.)"""
    bystander, _ = bound_chat(system, "bystander-flood")
    process = pool_manager(system)
    baseline = process.memory_info().rss
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    staging = system.home / "agents" / "staging"
    staging.mkdir()
    for n in range(FLOOD_FILES):
        # Hard links (each name is an entry all the same) are made 3 times faster than files.
        name = staging / f"{n:010d}-result.json"
        if n % LINKS_PER_FILE:
            os.link(staging / f"{n - n % LINKS_PER_FILE:010d}-result.json", name)
        else:
            name.touch()
    retired = pool(system)["pool"]["retired"]
    root = ready_agent(system)
    started = time.monotonic()
    os.rename(staging, ipc.layout(root).from_agent / "flood")
    still_served(system, "bystander-flood", bystander)
    answered_after = time.monotonic() - started
    wait_replaced(system, root, retired)
    retired = pool(system)["pool"]["retired"]
    root = ready_agent(system)
    flood = as_agent(system, root, f"i=0; while [ $i -lt {FLOOD_FILES} ]; do : > /ipc/out/.f$i; i=$((i+1)); done; echo $i")
    wait_replaced(system, root, retired)
    assert flood.output.strip() != str(FLOOD_FILES).encode()  # cut short: its container was removed
    stop.set()
    sampler.join()
    print(f"\n[flood] {FLOOD_FILES} files at once: bystander answered {answered_after:.2f} s later; "
          f"a flood inside the container was cut short (exit {flood.exit_code}); "
          f"pool-manager RSS {baseline // MB} MB -> peak {peak[0] // MB} MB")
    assert peak[0] - baseline < RSS_GROWTH_LIMIT
    assert system.service("pool-manager")["restarts"] == 0
    assert system.logs().count("rejected a file from agent") <= 20  # a line per agent, not per file
