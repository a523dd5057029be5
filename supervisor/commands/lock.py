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
# Extras kept out of the everyday install, each in a lock of its own resolved within the main
# one (its shared packages at the same versions): the model server compiles llama.cpp.
SEPARATE_EXTRAS = {"model-server": REPO / "requirements-model-server.lock"}
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


def lock_inputs(pyproject: Path = PYPROJECT, extra: str | None = None) -> dict:
    """What a lock is resolved from: the main lock's (``extra`` None) or a separate extra's;
    a change to any of it calls for `./run.sh lock`."""
    data = tomllib.loads(pyproject.read_text())
    project = data["project"]
    extras = project.get("optional-dependencies", {})
    if extra is not None:
        return {"requires-python": project["requires-python"], "extra": {extra: extras[extra]}}
    return {
        "requires-python": project["requires-python"],
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": {name: reqs for name, reqs in extras.items() if name not in SEPARATE_EXTRAS},
        "build-system": data["build-system"]["requires"],
        "tools": list(TOOLS),
    }


def requirements(inputs: dict) -> list[str]:
    """Every requirement string in lock_inputs(), direct, extra, build and tool alike."""
    found = list(inputs.get("dependencies", [])) + list(inputs.get("build-system", [])) + list(inputs.get("tools", []))
    for reqs in (*inputs.get("optional-dependencies", {}).values(), *inputs.get("extra", {}).values()):
        found += reqs
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


def compile_lock(uv: str, uv_args: list[str], pyproject: Path = PYPROJECT, lock: Path = LOCK) -> None:
    """Resolve lock_inputs() with uv into `lock`, then each separate extra into its own lock
    within it; a lock is replaced only when uv succeeds.

    uv keeps the pins of the old lock where they still fit (pass --upgrade for the newest
    of everything); the resolution is universal, so one lock serves every Python from
    requires-python on and every platform, with markers where versions differ."""
    inputs = lock_inputs(pyproject)
    extras = [f"--extra={name}" for name in inputs["optional-dependencies"]]
    _compile(uv, [*extras, *uv_args, pyproject.name, "-"], inputs["build-system"] + inputs["tools"],
             inputs, pyproject, lock)
    for extra, extra_lock in SEPARATE_EXTRAS.items():
        inputs = lock_inputs(pyproject, extra)
        _compile(uv, [*uv_args, "--constraint", str(lock), "-"], requirements(inputs), inputs, pyproject,
                 lock.with_name(extra_lock.name))


def _compile(uv: str, args: list[str], stdin: list[str], inputs: dict, pyproject: Path, lock: Path) -> None:
    # A fixed name is safe: `./run.sh lock` holds its install lock while this runs.
    scratch = lock.with_name(f".{lock.name}.new")
    try:
        # uv prefers the versions already in its output file.
        scratch.write_bytes(lock.read_bytes() if lock.exists() else b"")
        # Requirements that are not the project's own come in on stdin, so the file names no
        # temporary path.
        subprocess.run([uv, "pip", "compile", "--quiet", "--no-config", "--universal",
                        "--python-version", min_python(inputs["requires-python"]), "--generate-hashes",
                        "--custom-compile-command", COMPILE_COMMAND, "--output-file", scratch, *args],
                       input=("\n".join(stdin) + "\n").encode(), check=True, cwd=pyproject.parent)
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
