"""Code that attacks the machine from inside a real warm agent container: the container's
limits hold (no network, pids, memory) and the pool-manager replaces the container.

Docker only (the local backend is a process sandbox without these limits, and `status`
says so). The code runs with the Docker SDK's exec, as the container's own user, exactly
as code an agent ran would. The IPC sweep runs every second here, so a container that hit
its process limit (which no event reports) is seen quickly.
"""

from __future__ import annotations

import pytest

from conftest import wait_for
from proto.config import load
from test_hostile_agents import (
    READY_DEADLINE, as_agent, bound_chat, container_of, ready_agent, start_system, still_served,
    wait_replaced,
)
from test_pool import pool

pytestmark = [pytest.mark.slow, pytest.mark.hostile]
SWEEP_SECONDS = "1"
EXIT_KILLED = 137  # 128 + SIGKILL: the kernel's OOM killer

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
