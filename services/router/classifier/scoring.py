"""Scoring: a message's analysis -> (intent index, tier index, confidence in steps).

The model's most likely tier wins (intent probabilities summed per tier) and its most likely
intent inside that tier becomes the intent; the confidence is that tier's probability.

Two scorers give the same answers, bit for bit (tests/test_classifier.py checks it):
- the native one, `Scorer` of the C extension (see native.py, and the top of _native.c for
  why);
- `PythonScorer`, the fallback when it was not built, and the reference it is tested against.
`make_scorer` picks the native one when it is there.
"""
from __future__ import annotations

import logging
from array import array
from itertools import accumulate, chain
from operator import sub

from .model import FIXED_POINT_SCALE, LinearModel
from .native import MISSING as NATIVE_MISSING, extension
from .text import BIAS, RUN_EDGE, THAI_BLOCK_START, THAI_NGRAM_CHARS, family_tables, ngram_codes

log = logging.getLogger(__name__)

# Confidence is reported in thousandths: verdicts print compactly and compare stably.
CONFIDENCE_STEPS = 1000


class PythonScorer:
    """Scores in pure Python over packed weights (see model.py); builds no feature names."""

    __slots__ = ("_model", "_gets", "_ngrams", "_bias", "_spans", "_span_starts", "_span_stops")

    def __init__(self, model: LinearModel, spans: list[slice]) -> None:
        self._model = model
        packed = model.packed
        families, ngrams = family_tables(packed)
        self._gets = tuple({key: packed[name] for key, name in family.items()}.get
                           for family in families)
        self._ngrams = {code: packed[name] for code, name in ngrams.items()}
        self._bias = packed.get(BIAS, 0)
        self._spans = spans
        self._span_starts = [span.start for span in spans]
        self._span_stops = [span.stop for span in spans]

    def total(self, analysis: tuple) -> tuple[int, int]:
        """(sum of the packed weights of the analysis's features, number of features)."""
        thai_runs, families = analysis[0], analysis[1:]
        # One map per family, all chained: a C-level loop over every look-up.
        found = chain.from_iterable(map(map, self._gets, families))
        total = sum(filter(None, found), self._bias)
        count = 1 + sum(map(len, families))
        if thai_runs:
            total += sum(filter(None, map(self._ngrams.get, ngram_codes(thai_runs))))
            count += sum(map(len, thai_runs))
        return total, count

    def decide(self, analysis: tuple) -> tuple[int, int, int]:
        """(intent, tier, confidence in CONFIDENCE_STEPS) for an analysis from text.analyse."""
        exps = self._model.relative_exps(*self.total(analysis))
        # Probabilities are exps / sum(exps); the divisions are left out where only their
        # order matters.  Running sums make each tier's mass one subtraction, done in C.
        running = list(accumulate(exps, initial=0.0))
        at = running.__getitem__
        masses = list(map(sub, map(at, self._span_stops), map(at, self._span_starts)))
        best = max(masses)
        tier = masses.index(best)  # the likeliest tier; the first one on a tie
        span = self._spans[tier]
        in_tier = exps[span]
        intent = span.start + in_tier.index(max(in_tier))
        return intent, tier, int(best / running[-1] * CONFIDENCE_STEPS + 0.5)


def native_scorer(model: LinearModel, spans: list[slice]):
    """The C scorer (`_native.Scorer`) over the same weights, or None when it is not built."""
    if extension is None:
        return None
    if extension.NGRAM_CHARS != THAI_NGRAM_CHARS:
        raise ValueError(f"_native.c scores {extension.NGRAM_CHARS}-grams, text.py makes "
                         f"{THAI_NGRAM_CHARS}-grams: change both")
    row_of = {name: row for row, name in enumerate(model.fixed)}
    rows = array("i", chain.from_iterable(model.fixed.values()))
    families, ngrams = family_tables(model.fixed)
    return extension.Scorer(
        rows=rows.tobytes(), intents=len(model.intents),
        span_stops=tuple(span.stop for span in spans),
        tables=tuple({key: row_of[name] for key, name in family.items()} for family in families),
        ngrams={code: row_of[name] for code, name in ngrams.items()},
        bias_row=row_of.get(BIAS, -1), fixed_point_scale=float(FIXED_POINT_SCALE),
        confidence_steps=CONFIDENCE_STEPS, thai_block_start=THAI_BLOCK_START, run_edge=RUN_EDGE)


def make_scorer(model: LinearModel, spans: list[slice], native: bool = True):
    """The native scorer when `native` and it is built, else a PythonScorer; both have
    `decide(analysis)`."""
    scorer = native_scorer(model, spans) if native else None
    if scorer is None:
        if native:
            log.warning("classifier: C extension not built (%s); classifying in pure Python, "
                        "in about twice the time (README, 'How the router classifies')",
                        NATIVE_MISSING)
        return PythonScorer(model, spans)
    return scorer
