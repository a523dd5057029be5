"""requirements.lock: every Python package warmwire installs, at an exact version, with hashes.

It is made from pyproject.toml's requirements (dependencies, every extra, the build backend)
and the tools below, by `./run.sh lock`, which runs `python -m supervisor.commands.lock --uv PATH [UV ARGS]`.
run.sh installs .venv from it, images/build.py takes the agent image's wheels from it, and
tests/test_lock.py fails when it and pyproject.toml disagree.

Only the standard library here: `./run.sh lock` runs this before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "pyproject.toml"
LOCK = REPO / "requirements.lock"
# Locked beside pyproject's requirements: .venv's pip and the agent image's pip come from here.
TOOLS = ("pip",)
COMPILE_COMMAND = "./run.sh lock"  # what the lock's header tells a reader to run
# The lock's first line: the digest of the requirements it was resolved from.
DIGEST_LINE = "# inputs-sha256: {digest}  (pyproject.toml's requirements; see supervisor/commands/lock.py)"
DIGEST_RE = re.compile(r"^# inputs-sha256: ([0-9a-f]{64})\b", re.M)
MIN_PYTHON_RE = re.compile(r">=\s*(\d+(?:\.\d+)*)")
HASH_RE = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


@dataclass(frozen=True)
class Pin:
    name: str            # normalised (PEP 503): lower case, runs of -_. as one -
    version: str
    marker: str | None   # where it applies, e.g. "python_full_version < '3.12'"
    hashes: frozenset    # "sha256:<hex>" of every file of that release


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_inputs(pyproject: Path = PYPROJECT) -> dict:
    """What the lock is resolved from; a change to any of it calls for `./run.sh lock`."""
    data = tomllib.loads(pyproject.read_text())
    project = data["project"]
    return {
        "requires-python": project["requires-python"],
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "build-system": data["build-system"]["requires"],
        "tools": list(TOOLS),
    }


def requirements(inputs: dict) -> list[str]:
    """Every requirement string in lock_inputs(), direct, extra, build and tool alike."""
    found = list(inputs["dependencies"]) + list(inputs["build-system"]) + list(inputs["tools"])
    for extra in inputs["optional-dependencies"].values():
        found += extra
    return found


def inputs_digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def recorded_digest(lock: Path = LOCK) -> str | None:
    """The digest the lock's header records, or None when it has none."""
    m = DIGEST_RE.search(lock.read_text())
    return m.group(1) if m else None


def read_pins(lock: Path = LOCK) -> list[Pin]:
    """Every `name==version [; marker] --hash=...` entry; a package may be pinned twice when
    the versions differ by marker (e.g. one for Python 3.11, one for 3.12 and newer)."""
    pins = []
    for entry in lock.read_text().replace("\\\n", " ").splitlines():
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        requirement, _, _comment = entry.partition(" #")
        spec, _, marker_and_hashes = requirement.partition(";")
        spec = spec.split("--hash=")[0].strip()
        name, sep, version = spec.partition("==")
        if not sep:
            raise ValueError(f"{lock.name}: not an exact pin: {entry[:80]}")
        marker = marker_and_hashes.split("--hash=")[0].strip() or None
        pins.append(Pin(normalise(name), version.strip(), marker,
                        frozenset(HASH_RE.findall(requirement))))
    return pins


def min_python(requires_python: str) -> str:
    m = MIN_PYTHON_RE.search(requires_python)
    if m is None:
        raise ValueError(f"requires-python {requires_python!r} names no lower bound (>=)")
    return m.group(1)


def compile_lock(uv: str, uv_args: list[str], pyproject: Path = PYPROJECT,
                 lock: Path = LOCK) -> None:
    """Resolve lock_inputs() with uv into `lock`, replacing it only when uv succeeds.

    uv keeps the pins of the old lock where they still fit (pass --upgrade for the newest
    of everything); the resolution is universal, so one lock serves every Python from
    requires-python on and every platform, with markers where versions differ."""
    inputs = lock_inputs(pyproject)
    extra = "\n".join(inputs["build-system"] + inputs["tools"]) + "\n"
    # A fixed name is safe: `./run.sh lock` holds its install lock while this runs.
    scratch = lock.with_name(f".{lock.name}.new")
    try:
        # uv prefers the versions already in its output file.
        scratch.write_bytes(lock.read_bytes() if lock.exists() else b"")
        # Build requirements and tools come in on stdin, so the file names no temporary path.
        subprocess.run([uv, "pip", "compile", "--quiet", "--no-config", "--universal",
                        "--python-version", min_python(inputs["requires-python"]),
                        "--all-extras", "--generate-hashes",
                        "--custom-compile-command", COMPILE_COMMAND,
                        *uv_args, "--output-file", scratch, pyproject.name, "-"],
                       input=extra.encode(), check=True, cwd=pyproject.parent)
        body = scratch.read_text()
        scratch.write_text(DIGEST_LINE.format(digest=inputs_digest(inputs)) + "\n" + body)
        scratch.replace(lock)
    finally:
        scratch.unlink(missing_ok=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m supervisor.commands.lock",
                                description=f"Refresh {LOCK.name} from pyproject.toml.")
    p.add_argument("--uv", required=True, help="the uv executable to resolve with")
    args, uv_args = p.parse_known_args(argv)
    try:
        compile_lock(args.uv, uv_args)
    except subprocess.CalledProcessError as e:
        print(f"lock: uv failed (exit {e.returncode}); {LOCK.name} is unchanged",
              file=sys.stderr)
        return 1
    pins = read_pins()
    print(f"lock: {LOCK.name}: {len(pins)} pins", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
