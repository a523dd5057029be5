"""Classifier: structural rules first, then a linear model over text features.

Order of decisions: (1) shape rules (empty, /command, long, code block, stack trace, emoji
only); (2) a leading pleasantry is split off and the rest judged on its own ("hi! debug
this" is a code request); (3) the model, whose most likely tier wins (intent probabilities
summed per tier) and whose most likely intent inside that tier becomes `intent`.
"""
from __future__ import annotations

from pathlib import Path

from . import rules
from .conversation import Session, in_session, web_request
from .model import WEIGHTS_PATH, LinearModel
from .scoring import CONFIDENCE_STEPS, PythonScorer, make_scorer
from .text import analyse, features, normalise
from .verdict import INLINE, INTENT_REASON, LEARNED_INTENTS, TIERS, Verdict


class Classifier:
    """Maps a message to one of TIERS.  Build once with `Classifier.load()`; thread-safe."""

    __slots__ = ("_model", "_scorer", "_tiers", "_spans", "_verdicts")

    def __init__(self, model: LinearModel, native: bool = True) -> None:
        """`native=False` uses the Python scorer even where the C one is built."""
        unknown = [i for i in model.intents if i not in LEARNED_INTENTS]
        if unknown:
            raise ValueError(f"model has intents the router does not know: {unknown}")
        tier_of = [LEARNED_INTENTS[i] for i in model.intents]
        if tier_of != sorted(tier_of, key=TIERS.index):
            raise ValueError("model intents must be grouped by tier (see train.py)")
        self._model = model
        # Each tier and the slice of the model's output that belongs to it.
        self._tiers = [t for t in TIERS if t in tier_of]
        self._spans = [slice(tier_of.index(t), len(tier_of) - tier_of[::-1].index(t))
                       for t in self._tiers]
        self._scorer = make_scorer(model, self._spans, native)
        # Model verdicts by intent and confidence: Verdict is immutable, so equal verdicts can
        # be one object, which saves building it per call.  Filled as they occur.
        self._verdicts: list[list[Verdict | None]] = [
            [None] * (CONFIDENCE_STEPS + 1) for _ in model.intents]

    @classmethod
    def load(cls, path: Path | str | None = None, native: bool = True) -> "Classifier":
        """Load the shipped weights (see train.py to regenerate them from the corpus)."""
        return cls(LinearModel.load(Path(path) if path else WEIGHTS_PATH), native)

    @property
    def model(self) -> LinearModel:
        return self._model

    @property
    def scorer(self):
        """The scorer in use: the C one (`_native.Scorer`) or a `PythonScorer`."""
        return self._scorer

    @property
    def scorer_name(self) -> str:
        """The scorer's name, "C" or "Python", for status and benchmark lines."""
        return "Python" if isinstance(self._scorer, PythonScorer) else "C"

    def classify(self, text: str, session: Session | None = None, window_s: float = 0.0) -> Verdict:
        """The tier (and intent, reason, confidence) that should answer `text`; with the
        chat's agent `session`, a follow-up within `window_s` s goes to the session's tier."""
        verdict = self._classify(text)
        return verdict if session is None else in_session(text, verdict, session, window_s)

    def _classify(self, text: str) -> Verdict:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        ruled = rules.structural(text) or web_request(text)
        if ruled is not None:
            return ruled
        split = rules.split_opener(text)
        if split is not None:
            # "hi! can you debug this" -> the request decides.  When the rest is a pleasantry
            # too ("got it, thanks"), its verdict stands for the whole message.
            opener, rest = split
            verdict = rules.structural(rest) or web_request(rest) or self._predict(rest)
            if verdict.tier == INLINE:
                return verdict
            return Verdict(verdict.tier, f"{verdict.reason} (after '{_short(opener)}')",
                           verdict.confidence, verdict.intent)
        return self._predict(text)

    def _predict(self, text: str) -> Verdict:
        intent, tier, confidence = self._scorer.decide(analyse(text, normalise(text)))
        verdict = self._verdicts[intent][confidence]
        if verdict is None:  # a list store is atomic, so racing threads at worst build it twice
            name = self._model.intents[intent]
            verdict = self._verdicts[intent][confidence] = Verdict(
                self._tiers[tier], INTENT_REASON[name], confidence / CONFIDENCE_STEPS, name)
        return verdict

    def tier_probabilities(self, text: str) -> dict[str, float]:
        """Model probability of each tier (ignores the rules); for diagnostics."""
        probs = self._model.probabilities(features(text, normalise(text)))
        return {t: sum(probs[span]) for t, span in zip(self._tiers, self._spans)}


_OPENER_SHOWN_CHARS = 20


def _short(text: str) -> str:
    return text if len(text) <= _OPENER_SHOWN_CHARS else text[:_OPENER_SHOWN_CHARS] + "…"
