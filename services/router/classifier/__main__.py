"""Classify JSON lines from stdin: python -m services.router.classifier [--help]

Each input line is a JSON object with a "text" field and optionally the chat's agent session,
"session": {"tier": "container-light" | "container-full", "age_s": seconds since the agent
last replied}; each output line is {"tier": ..., "reason": ..., "confidence": ..., "intent": ...}
in the same order.  A line that is not JSON or has no string "text" (or a malformed session)
gives {"error": "..."} in its place; the stream goes on.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from proto.config import ConfigError, load

from .classifier import Classifier
from .conversation import AGENT_TIERS, Session
from .verdict import TIERS


def _session(row: dict) -> Session | str | None:
    """The line's session, None without one, or what is wrong with it."""
    session = row.get("session")
    if session is None:
        return None
    if not isinstance(session, dict) or session.get("tier") not in AGENT_TIERS:
        return f"\"session\" must be {{\"tier\": one of {list(AGENT_TIERS)}, \"age_s\": seconds}}"
    age = session.get("age_s", 0.0)
    if isinstance(age, bool) or not isinstance(age, (int, float)) or age < 0:
        return "\"session\".\"age_s\" must be a number of seconds >= 0"
    return Session(session["tier"], float(age))


def _verdict_line(clf: Classifier, line: str, window_s: float) -> dict:
    try:
        row = json.loads(line)
    except ValueError as exc:
        return {"error": f"not JSON: {exc}"}
    if not isinstance(row, dict):
        return {"error": "expected a JSON object with a \"text\" field"}
    text = row.get("text")
    if not isinstance(text, str):
        return {"error": "missing or non-string \"text\" field"}
    session = _session(row)
    if isinstance(session, str):
        return {"error": session}
    return clf.classify(text, session, window_s).as_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.router.classifier",
        description="Read JSON lines {\"text\": ...} on stdin and write one JSON line "
                    "{\"tier\", \"reason\", \"confidence\", \"intent\"} per input line, in order; an optional "
                    "\"session\": {\"tier\", \"age_s\"} routes follow-ups to an open agent session. "
                    f"Tiers: {', '.join(TIERS)}. Bad lines give {{\"error\": ...}}.",
        epilog="example: echo '{\"text\": \"hi! can you debug this?\"}' | "
               "python -m services.router.classifier")
    parser.add_argument("--text", metavar="TEXT", action="append",
                        help="classify TEXT instead of reading stdin (repeatable)")
    args = parser.parse_args(argv)

    # Undecodable bytes must become an error line for that input, not a crash of the stream.
    sys.stdin.reconfigure(encoding="utf-8", errors="replace")
    sys.stdout.reconfigure(encoding="utf-8")
    try:
        window_s = load(os.environ).router.session_window
    except ConfigError as exc:
        parser.error(str(exc))
    clf = Classifier.load()
    out = sys.stdout
    if args.text:
        for text in args.text:
            out.write(json.dumps(clf.classify(text).as_dict(), ensure_ascii=False) + "\n")
        return 0
    # Interactive use wants each answer at once; a pipe is faster with normal buffering.
    interactive = sys.stdin.isatty()
    for line in sys.stdin:
        if not line.strip():
            result = {"error": "empty line"}
        else:
            result = _verdict_line(clf, line, window_s)
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
        if interactive:
            out.flush()
    out.flush()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # reader went away (e.g. piped into `head`)
        sys.exit(0)
