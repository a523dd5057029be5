"""The agent's tools: files and commands in the chat's own workspace.

stdlib only (it ships in the agent image). Every tool works inside one folder, the workspace
(`/workspace` in a container: the chat's folder on the host, which outlives any container).
A path is taken relative to it; one that resolves outside it, through `..` or a symlink, is
refused. Whatever goes wrong comes back as a result with ``ok`` False and a short reason for
the model: a tool never raises.

The workspace has a disk cap. Before a write, the new size is checked against it; `run` gets
the room that is left as its largest file size (RLIMIT_FSIZE), and the workspace is measured
again after every command. Past the cap, writes are refused and the result says so.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from dataclasses import dataclass

MB = 1 << 20
# Bounds on what a tool returns to the model (and so to the provider and the history).
MAX_READ_BYTES = 64 * 1024
MAX_OUTPUT_BYTES = 16 * 1024
MAX_LISTED = 200
DEFAULT_RUN_TIMEOUT_S = 30.0
# Only these reach a command's environment: no key, no IPC secret, nothing of the runner's.
RUN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}
TRUNCATED = "\n[... {} bytes cut ...]\n"
# A shell reports a child killed by signal N as exit status 128 + N.
SHELL_SIGNAL_BASE = 128

READ, WRITE, LIST, RUN = "read_file", "write_file", "list_files", "run"
ALL_TOOLS = (READ, WRITE, LIST, RUN)

# What the model is told about each tool (JSON Schema for the input), in one neutral form;
# the model gateway puts it in each provider's own shape.
SPECS = {
    READ: ("Read a text file in the workspace.",
           {"type": "object", "properties": {"path": {"type": "string", "description": "relative to the workspace"}},
            "required": ["path"]}),
    WRITE: ("Write (create or replace) a text file in the workspace.",
            {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
             "required": ["path", "content"]}),
    LIST: ("List the files in a folder of the workspace (default: its top).",
           {"type": "object", "properties": {"path": {"type": "string"}}}),
    RUN: ("Run a shell command in the workspace (no network). Output is cut when long.",
          {"type": "object", "properties": {"command": {"type": "string"},
                                            "timeout_s": {"type": "number"}},
           "required": ["command"]}),
}


def specs(names) -> list[dict]:
    """The tools' descriptions for the model, as the gateway takes them (its ToolSpec):
    [{"name", "description", "parameters": JSON schema}]."""
    return [{"name": name, "description": SPECS[name][0], "parameters": SPECS[name][1]}
            for name in names if name in SPECS]


@dataclass
class Result:
    ok: bool
    text: str
    # The tool ran into the workspace's cap: the user is told, not only the model.
    full: bool = False


@dataclass
class Workspace:
    root: str
    cap_bytes: int
    allowed: tuple = ALL_TOOLS
    run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S

    def __post_init__(self) -> None:
        self.root = os.path.realpath(self.root)

    # -- what the user sees while a tool works
    @staticmethod
    def describe(name: str, args: dict) -> str:
        """A progress line: "running: pytest -q", "writing report.md"."""
        what = args.get("command") if name == RUN else args.get("path", ".")
        verb = {READ: "reading", WRITE: "writing", LIST: "listing", RUN: "running:"}.get(name, name)
        return f"{verb} {_shorten(str(what), 80)}"

    def call(self, name: str, args) -> Result:
        if name not in SPECS:
            return Result(False, f"no tool named {_shorten(str(name), 40)!r}")
        if name not in self.allowed:
            return Result(False, f"the tool {name} is not available here")
        if not isinstance(args, dict):
            return Result(False, "tool arguments must be a JSON object")
        try:
            return getattr(self, "_" + name)(args)
        except OSError as exc:
            return Result(False, f"{name} failed: {exc.strerror or type(exc).__name__}")

    # -- paths
    def resolve(self, path) -> str:
        """The real path inside the workspace, or ValueError: `..`, absolute paths elsewhere
        and symlinks that lead out are refused."""
        if not isinstance(path, str) or "\x00" in path:
            raise ValueError("path must be a string")
        # An absolute path is kept as it is: /workspace/x is inside, /etc/shadow is not.
        real = os.path.realpath(os.path.join(self.root, path))
        if real != self.root and not real.startswith(self.root + os.sep):
            raise ValueError(f"{_shorten(path, 80)} is outside the workspace")
        return real

    def usage(self) -> int:
        total = 0
        for folder, dirs, files in os.walk(self.root):
            for name in files:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_blocks * 512
                except OSError:
                    pass
        return total

    def full_message(self) -> str:
        return f"the workspace is full (its cap is {self.cap_bytes // MB} MB): delete files before writing more"

    def _full(self) -> Result:
        return Result(False, self.full_message(), full=True)

    # -- the tools
    def _read_file(self, args: dict) -> Result:
        try:
            path = self.resolve(args.get("path"))
        except ValueError as exc:
            return Result(False, str(exc))
        with open(path, "rb") as f:
            data = f.read(MAX_READ_BYTES + 1)
        text = data[:MAX_READ_BYTES].decode("utf-8", "replace")
        return Result(True, text + ("\n[... the rest of the file is not shown ...]" if len(data) > MAX_READ_BYTES else ""))

    def _write_file(self, args: dict) -> Result:
        content = args.get("content")
        if not isinstance(content, str):
            return Result(False, "content must be a string")
        try:
            path = self.resolve(args.get("path"))
        except ValueError as exc:
            return Result(False, str(exc))
        data = content.encode("utf-8")
        old = os.lstat(path).st_size if os.path.lexists(path) else 0
        if self.usage() - old + len(data) > self.cap_bytes:
            return self._full()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # O_NOFOLLOW: a symlink put in place since resolve() is not followed out.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return Result(True, f"wrote {len(data)} bytes to {os.path.relpath(path, self.root)}")

    def _list_files(self, args: dict) -> Result:
        try:
            path = self.resolve(args.get("path") or ".")
        except ValueError as exc:
            return Result(False, str(exc))
        entries = sorted(os.scandir(path), key=lambda e: e.name)
        lines = [f"{e.name}/" if e.is_dir(follow_symlinks=False) else f"{e.name}  {e.stat(follow_symlinks=False).st_size} B"
                 for e in entries[:MAX_LISTED]]
        if len(entries) > MAX_LISTED:
            lines.append(f"[... {len(entries) - MAX_LISTED} more ...]")
        return Result(True, "\n".join(lines) or "(empty)")

    def _run(self, args: dict) -> Result:
        command = args.get("command")
        if not isinstance(command, str) or not command.strip():
            return Result(False, "command must be a non-empty string")
        timeout = args.get("timeout_s")
        timeout = min(float(timeout), self.run_timeout_s) if isinstance(timeout, (int, float)) and timeout > 0 \
            else self.run_timeout_s
        # A full workspace may still run commands (to delete files): none can grow a file.
        room = max(0, self.cap_bytes - self.usage())

        def limits() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (room, room))
            # Python ignores SIGXFSZ and a child inherits that: restored, a command that grows
            # a file past the room is stopped by it, which says the cap was reached.
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)

        proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=self.root, env=RUN_ENV, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=limits,
                                start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
            status = f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            status = f"stopped after {timeout:g} s"
        finally:
            _kill_group(proc.pid)
        text = _cap(output.decode("utf-8", "replace"))
        # SIGXFSZ: the command (or the shell, for a builtin) tried to grow a file past the room.
        hit_limit = proc.returncode in (-signal.SIGXFSZ, SHELL_SIGNAL_BASE + signal.SIGXFSZ)
        if hit_limit or self.usage() >= self.cap_bytes:
            return Result(False, f"{status}\n{text}\n{self.full_message()}", full=True)
        return Result(proc.returncode == 0, f"{status}\n{text}")


def _kill_group(pid: int) -> None:
    """What the command left running in the background goes too."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def _cap(text: str) -> str:
    """Head and tail of a long output: both ends usually matter (the command, the error)."""
    if len(text) <= MAX_OUTPUT_BYTES:
        return text
    half = MAX_OUTPUT_BYTES // 2
    return text[:half] + TRUNCATED.format(len(text) - 2 * half) + text[-half:]


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
