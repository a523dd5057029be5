"""A client in a second language: tests/node_client/check.mjs (Node.js with npm's `zeromq` and
`@msgpack/msgpack`, written from the README's wire protocol only) checks a live warmwire:
inline replies, resends, bad frames, bin for str, 20 concurrent clients. It prints one line
per check; this test passes when every check does.

Without node and npm the test is skipped, except under CI=true, where it fails: CI must run it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest

from conftest import REPO, unavailable

pytestmark = pytest.mark.slow
NODE_CLIENT = REPO / "tests" / "node_client"
MIN_NODE = 20                # package.json's engines
NODE_NEED = "Node.js"        # a key of conftest.ENABLERS
NPM_CI_TIMEOUT = 600.0       # a cold npm cache downloads about 10 MB
CHECK_TIMEOUT = 240.0        # the script's own watchdog ends it after 180 s


def output(result: subprocess.CompletedProcess | subprocess.TimeoutExpired) -> str:
    text = ""
    for stream in (result.stdout, result.stderr):
        if stream:
            text += stream.decode(errors="replace") if isinstance(stream, bytes) else stream
    return text


def installed() -> bool:
    """node_modules holds what package-lock.json pins (npm writes its own copy of the lock,
    node_modules/.package-lock.json, when an install completes)."""
    try:
        done = json.loads((NODE_CLIENT / "node_modules" / ".package-lock.json").read_text())["packages"]
    except (OSError, ValueError, KeyError):
        return False
    wanted = json.loads((NODE_CLIENT / "package-lock.json").read_text())["packages"]
    return all(done.get(path, {}).get("version") == entry.get("version")
               for path, entry in wanted.items() if path)


@pytest.fixture(scope="module")
def node_client(figures) -> str:
    """The node binary, with the client's packages installed (npm ci when they are not)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable(NODE_NEED, f"{'node' if node is None else 'npm'} is not installed")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    major = re.match(r"v(\d+)\.", version)
    if major is None or int(major.group(1)) < MIN_NODE:
        unavailable(NODE_NEED, f"node {version or '(no version)'} is older than {MIN_NODE}")
    if installed():
        figures.append(f"node client: node {version}, packages already in tests/node_client/node_modules")
        return node
    started = time.monotonic()
    command = [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"]
    try:
        result = subprocess.run(command, cwd=NODE_CLIENT, capture_output=True, text=True, timeout=NPM_CI_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{' '.join(command[1:])}` took over {NPM_CI_TIMEOUT:g} s:\n{output(exc)}")
    if result.returncode != 0:
        pytest.fail(f"`npm ci` in {NODE_CLIENT} exited {result.returncode}:\n{output(result)}", pytrace=False)
    figures.append(f"node client: node {version}, npm ci {time.monotonic() - started:.1f} s")
    return node


def test_a_node_client_passes_every_wire_protocol_check(node_client, warmwire, figures):
    started = time.monotonic()
    command = [node_client, str(NODE_CLIENT / "check.mjs"), warmwire.frontend]
    try:
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=CHECK_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"check.mjs took over {CHECK_TIMEOUT:g} s:\n{output(exc)}")
    figures.append(f"node client: check.mjs {time.monotonic() - started:.1f} s, exit {result.returncode}")
    if result.returncode != 0:
        pytest.fail(f"check.mjs exited {result.returncode}:\n{output(result)}", pytrace=False)
    assert re.search(r"^(\d+) of \1 checks passed", result.stdout, re.M), output(result)
