"""Classify JSON lines from stdin: python -m services.router.classifier [--help]

Each input line is a JSON object with a "text" field; each output line is
{"tier": ..., "reason": ..., "confidence": ..., "intent": ...} in the same order.  A line that
is not JSON or has no string "text" gives {"error": "..."} in its place; the stream goes on.
"""
from __future__ import annotations

import argparse
import json
import sys

from .classifier import Classifier
from .verdict import TIERS


def _verdict_line(clf: Classifier, line: str) -> dict:
    try:
        row = json.loads(line)
    except ValueError as exc:
        return {"error": f"not JSON: {exc}"}
    if not isinstance(row, dict):
        return {"error": "expected a JSON object with a \"text\" field"}
    text = row.get("text")
    if not isinstance(text, str):
        return {"error": "missing or non-string \"text\" field"}
    return clf.classify(text).as_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.router.classifier",
        description="Read JSON lines {\"text\": ...} on stdin and write one JSON line "
                    "{\"tier\", \"reason\", \"confidence\", \"intent\"} per input line, in order. "
                    f"Tiers: {', '.join(TIERS)}. Bad lines give {{\"error\": ...}}.",
        epilog="example: echo '{\"text\": \"hi! can you debug this?\"}' | "
               "python -m services.router.classifier")
    parser.add_argument("--text", metavar="TEXT", action="append",
                        help="classify TEXT instead of reading stdin (repeatable)")
    args = parser.parse_args(argv)

    # Undecodable bytes must become an error line for that input, not a crash of the stream.
    sys.stdin.reconfigure(encoding="utf-8", errors="replace")
    sys.stdout.reconfigure(encoding="utf-8")
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
            result = _verdict_line(clf, line)
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
