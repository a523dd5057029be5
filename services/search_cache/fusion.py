"""Reciprocal rank fusion: one ranking out of several, using only the ranks.

Full-text scores (bm25) and vector similarities are on scales that cannot be compared, so
each ranking contributes 1 / (k + rank) for every note it holds; a note ranked well by both
rises above one ranked first by only one of them.
"""

from __future__ import annotations

from typing import Iterable, Sequence


def reciprocal_rank_fusion(rankings: Iterable[Sequence[str]], k: int) -> list[tuple[str, float]]:
    """(id, fused score) best first; ties keep the order in which ids were first seen."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: item[1], reverse=True)
