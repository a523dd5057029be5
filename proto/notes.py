"""Files as notes: the splitting that `warmwire learn` and the web page's file drop share.

A heading starts a new note, paragraphs are packed together up to the limit, and an
over-long paragraph is cut at sentence ends, then at spaces (Thai separates clauses with
spaces), then hard at the limit.
"""

from __future__ import annotations

import re

# A Markdown heading starts a new note; so does a blank line once a note is big enough.
_HEADING = re.compile(r"^#{1,6}\s")
_BLANK_LINES = re.compile(r"\n\s*\n")
# Places to cut an over-long paragraph, best first: after a sentence end, then at any space.
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")


def _cut_long(paragraph: str, limit: int) -> list[str]:
    """A paragraph over the limit: sentences packed up to it; a sentence still over it is cut
    at the last space (Thai separates clauses with spaces), or hard at the limit."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(paragraph):
        while len(sentence) > limit:
            at = sentence.rfind(" ", 0, limit + 1)
            at = at if at > 0 else limit
            pieces.append(sentence[:at])
            sentence = sentence[at:].lstrip()
        pieces.append(sentence)
    return _pack(pieces, limit, " ")


def _pack(pieces: list[str], limit: int, joiner: str) -> list[str]:
    notes: list[str] = []
    current = ""
    for piece in pieces:
        if not piece.strip():
            continue
        if current and len(current) + len(joiner) + len(piece) > limit:
            notes.append(current)
            current = ""
        current = f"{current}{joiner}{piece}" if current else piece
    if current:
        notes.append(current)
    return notes


def split_notes(text: str, limit: int) -> list[str]:
    """A file's text as notes of at most ``limit`` characters: a heading starts a new note,
    paragraphs are packed together up to the limit, over-long ones are cut at sentences."""
    sections: list[list[str]] = [[]]
    for paragraph in _BLANK_LINES.split(text.replace("\r\n", "\n")):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if _HEADING.match(paragraph) and sections[-1]:
            sections.append([])
        sections[-1].append(paragraph)
    notes: list[str] = []
    for section in sections:
        pieces: list[str] = []
        for paragraph in section:
            pieces.extend(_cut_long(paragraph, limit) if len(paragraph) > limit else [paragraph])
        notes.extend(_pack(pieces, limit, "\n\n"))
    return notes
