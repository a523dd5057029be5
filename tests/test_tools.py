"""The agent's tools on a real folder: they stay in the workspace, keep to its cap, and turn
every failure into a result for the model (images/agent/tools.py)."""

from __future__ import annotations

import os
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "images" / "agent"))
import tools  # noqa: E402  (the agent's own module, as it runs in the image)

CAP = 1 << 20


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    return tools.Workspace(str(root), CAP)


def test_write_read_and_list_work_inside(workspace):
    assert workspace.call("write_file", {"path": "docs/notes.txt", "content": "สวัสดี hello"}).ok
    assert workspace.call("read_file", {"path": "docs/notes.txt"}).text == "สวัสดี hello"
    assert workspace.call("read_file", {"path": f"{workspace.root}/docs/notes.txt"}).ok
    assert "docs/" in workspace.call("list_files", {}).text
    assert "notes.txt" in workspace.call("list_files", {"path": "docs"}).text


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "docs/../../x", "/tmp/x", "link/x", "link"])
def test_paths_that_lead_out_are_refused(workspace, tmp_path, path):
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", os.path.join(workspace.root, "link"))
    for name, args in (("write_file", {"path": path, "content": "x"}), ("read_file", {"path": path})):
        result = workspace.call(name, args)
        assert not result.ok and "outside the workspace" in result.text, (name, path, result)
    assert not any((tmp_path / "outside").iterdir()) and not (tmp_path / "x").exists()


def test_a_command_runs_in_the_workspace_with_its_exit_status_and_a_capped_output(workspace):
    done = workspace.call("run", {"command": "echo made > made.txt; ls; exit 3"})
    assert not done.ok and done.text.startswith("exit 3") and "made.txt" in done.text
    long = workspace.call("run", {"command": "yes warmwire | head -c 100000"})
    assert long.ok and len(long.text) < tools.MAX_OUTPUT_BYTES + 200 and "bytes cut" in long.text


def test_a_command_sees_no_secret_of_the_runner(workspace, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-must-not-leak")
    assert "sk-must-not-leak" not in workspace.call("run", {"command": "env"}).text


def test_a_command_that_hangs_is_stopped_with_what_it_left_behind(workspace):
    workspace.run_timeout_s = 1.0
    result = workspace.call("run", {"command": "sleep 60 & sleep 60"})
    assert not result.ok and "stopped after 1 s" in result.text


def test_the_cap_refuses_writes_and_says_so(workspace):
    assert workspace.call("write_file", {"path": "a", "content": "x" * (CAP // 2)}).ok
    refused = workspace.call("write_file", {"path": "b", "content": "x" * (CAP // 2 + 4096)})
    assert not refused.ok and refused.full and "cap" in refused.text
    grown = workspace.call("run", {"command": "head -c 3000000 /dev/zero > big"})
    assert not grown.ok and os.path.getsize(os.path.join(workspace.root, "big")) < CAP
    assert workspace.call("run", {"command": "echo more >> a"}).full
    # Full, a command can still delete; then writes work again.
    assert workspace.call("run", {"command": "rm big a"}).ok
    assert workspace.call("write_file", {"path": "b", "content": "fits again"}).ok


@pytest.mark.parametrize("name, args", [("run", {"command": ""}), ("write_file", {"path": "x", "content": 5}),
                                        ("read_file", {"path": "missing.txt"}), ("rm", {"path": "x"}),
                                        ("read_file", ["not", "a", "map"]), ("list_files", {"path": "nope"})])
def test_bad_calls_come_back_as_results_not_exceptions(workspace, name, args):
    result = workspace.call(name, args)
    assert not result.ok and result.text


def test_a_tool_not_allowed_here_is_refused(workspace):
    workspace.allowed = (tools.READ, tools.WRITE, tools.LIST)
    result = workspace.call("run", {"command": "echo hi"})
    assert not result.ok and "not available" in result.text


def test_progress_lines_say_what_a_tool_does():
    assert tools.Workspace.describe("run", {"command": "pytest -q"}) == "running: pytest -q"
    assert tools.Workspace.describe("write_file", {"path": "report.md"}) == "writing report.md"
