"""warmwire learn PATH: import a Markdown/text file, or a folder of them, into the knowledge base.

Each file is split into notes (at headings and blank lines, then sentence ends) and every note
goes to the search-cache as a ``LearnRequest`` over its socket, a window of them in flight at
once. A note's id comes from its file and its text, and each carries its place in the file
(``part``/``parts``): importing the same file again changes nothing, and importing an edited
file replaces the notes that changed.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

import zmq

from proto.config import Config
from proto.frames import Codec, KnowledgeIn, KnowledgeOut, LearnRequest
from proto.notes import split_notes
from proto.sockets import connect_dealer

HELP = "import a Markdown/text file or a folder of them into the knowledge base"
PROGRESS_WIDTH = 30


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("path", type=Path, help="a file, or a folder searched recursively")
    parser.add_argument("--tag", action="append", default=[], dest="tags",
                        help="a tag for every imported note (repeatable)")
    return parser


def find_files(path: Path, extensions: list[str]) -> list[Path]:
    if path.is_file():
        return [path]
    wanted = {ext.lower() for ext in extensions}
    return sorted(
        file for file in path.rglob("*")
        if file.is_file() and file.suffix.lower() in wanted
        and not any(part.startswith(".") for part in file.relative_to(path).parts)
    )


def progress(done: int, total: int, notes: int) -> None:
    filled = PROGRESS_WIDTH * done // total if total else PROGRESS_WIDTH
    bar = "#" * filled + " " * (PROGRESS_WIDTH - filled)
    end = "\n" if done == total else ""
    print(f"\r[{bar}] {done}/{total} files, {notes} notes", end=end, file=sys.stderr, flush=True)


def main(config: Config, args: argparse.Namespace) -> int:
    if not args.path.exists():
        print(f"warmwire learn: {args.path} does not exist", file=sys.stderr)
        return 2
    files = find_files(args.path, config.learn.extensions)
    if not files:
        print(f"warmwire learn: no {', '.join(config.learn.extensions)} files in {args.path}",
              file=sys.stderr)
        return 2
    # Every note of every file, in order: (file number, request).
    work: list[tuple[int, LearnRequest]] = []
    notes_in_file = [0] * len(files)
    skipped: list[str] = []
    for number, file in enumerate(files):
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            skipped.append(f"{file}: {exc}")
            continue
        notes = split_notes(text, config.learn.note_chars)
        notes_in_file[number] = len(notes)
        source = str(file.resolve())
        for part, note in enumerate(notes):
            work.append((number, LearnRequest(req=uuid.uuid4().hex, text=note, source=source,
                                              tags=args.tags, part=part, parts=len(notes))))
    return _send_all(config, files, work, notes_in_file, skipped)


def _send_all(config: Config, files: list[Path], work: list[tuple[int, LearnRequest]],
              notes_in_file: list[int], skipped: list[str]) -> int:
    requests, answers = Codec(KnowledgeIn), Codec(KnowledgeOut)
    sock = connect_dealer(zmq.Context.instance(), config.endpoint("search"))
    in_flight: dict[str, int] = {}  # req -> file number
    left = list(notes_in_file)
    files_done = sum(1 for count in notes_in_file if count == 0)
    learned = unindexed = 0
    errors: list[str] = []
    next_item = 0
    progress(files_done, len(files), learned)
    try:
        while next_item < len(work) or in_flight:
            while next_item < len(work) and len(in_flight) < config.learn.in_flight:
                number, request = work[next_item]
                sock.send(requests.encode(request))
                in_flight[request.req] = number
                next_item += 1
            if not sock.poll(int(config.learn.answer_timeout * 1000)):
                print(f"\nwarmwire learn: no answer from the search-cache within "
                      f"{config.learn.answer_timeout:g} s (is warmwire running? ./run.sh status)",
                      file=sys.stderr)
                return 1
            answer = answers.decode(sock.recv())
            number = in_flight.pop(answer.req, None)
            if number is None:
                continue
            if answer.error:
                errors.append(f"{files[number]}: {answer.error}")
            else:
                learned += 1
                unindexed += not answer.indexed
            left[number] -= 1
            if left[number] == 0:
                files_done += 1
                progress(files_done, len(files), learned)
    finally:
        sock.close()
    for line in skipped + errors:
        print(f"warmwire learn: {line}", file=sys.stderr)
    later = f" ({unindexed} searchable by meaning once chroma is back)" if unindexed else ""
    print(f"learned {learned} notes from {len(files) - len(skipped)} files{later}")
    return 1 if errors or skipped else 0

