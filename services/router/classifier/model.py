"""A multinomial logistic-regression model over sparse features, scored in pure Python.

Scoring trick: each feature's weights for all K intents are stored as fixed-point integers
packed side by side into ONE Python integer (a field of FIELD_BITS bits per intent).  Adding
those integers adds all K weights at once, so a message is scored with a single C-level
`sum(map(dict.get, features))` and one struct.unpack, instead of a Python loop over
(feature, intent) pairs.  Each field holds `weight + OFFSET` so it never goes negative (no
borrow into the neighbour field); every field of a sum then carries the same
`OFFSET * known_features`, which the softmax cancels (it only needs score differences).
"""
from __future__ import annotations

import json
import struct
from itertools import repeat
from math import exp, sqrt
from pathlib import Path

WEIGHTS_PATH = Path(__file__).with_name("data") / "weights.json"
FORMAT_VERSION = 2

FIXED_POINT_SCALE = 2048          # weights are stored as round(w * scale): ~0.0005 resolution
WEIGHT_LIMIT = 31.0               # |w| is clipped to this (trained weights stay under ~20)
OFFSET = 1 << 16                  # > WEIGHT_LIMIT * FIXED_POINT_SCALE, so a field is >= 0
FIELD_BITS = 32                   # a field sums to < 2**17 per feature ...
MAX_FEATURES = 1 << 14            # ... so this many features never overflow into the next


def pack(fixed: list[int]) -> int:
    """Pack one feature's fixed-point weights (never 0: every field holds at least 1)."""
    packed = 0
    for k, value in enumerate(fixed):
        if not -OFFSET < value < OFFSET:
            raise ValueError(f"fixed-point weight {value} out of range")
        packed |= (value + OFFSET) << (FIELD_BITS * k)
    return packed


def to_fixed(weight: float) -> int:
    clipped = max(-WEIGHT_LIMIT, min(WEIGHT_LIMIT, weight))
    return round(clipped * FIXED_POINT_SCALE)


class LinearModel:
    """Packed weights per feature; features are count vectors scaled to unit length."""

    __slots__ = ("intents", "fixed", "meta", "_packed", "_fields", "_width")

    def __init__(self, intents: list[str], fixed: dict[str, list[int]],
                 meta: dict | None = None) -> None:
        self.intents = intents
        self.fixed = fixed            # feature -> fixed-point weight per intent (as stored)
        self.meta = meta or {}
        self._packed = {feat: pack(values) for feat, values in fixed.items()}
        # All K fields of a sum, decoded by one C call ("I" = 4 bytes = FIELD_BITS).
        self._fields = struct.Struct(f"<{len(intents)}I")
        self._width = self._fields.size

    @property
    def packed(self) -> dict[str, int]:
        """Feature -> its packed weights (see the module docstring)."""
        return self._packed

    def relative_exps(self, total: int, count: int) -> list[float]:
        """exp(score - top score) of every intent, in `self.intents` order.

        `total` is the sum of the packed weights of a message's `count` features.  These are
        the softmax numerators: dividing by their sum gives the probabilities.
        """
        if count > MAX_FEATURES:  # featurisation is windowed, so this never happens
            raise ValueError(f"{count} features overflow the packed fields")
        fields = self._fields.unpack(total.to_bytes(self._width, "little"))
        top = max(fields)
        # Unit-length scaling: long and short messages get comparable score magnitudes.
        unit = 1.0 / (FIXED_POINT_SCALE * sqrt(count))
        return [exp((field - top) * unit) for field in fields]

    def probabilities(self, feats: list[str]) -> list[float]:
        """Softmax probability of every intent, in `self.intents` order."""
        exps = self.relative_exps(sum(map(self._packed.get, feats, repeat(0))), len(feats))
        total = sum(exps)
        return [e / total for e in exps]

    # --- storage ---------------------------------------------------------------------------

    def save(self, path: Path = WEIGHTS_PATH) -> None:
        """Write JSON with one feature per line, so a retrain gives a readable diff."""
        head = json.dumps({"format": FORMAT_VERSION, "intents": self.intents,
                           "fixed_point_scale": FIXED_POINT_SCALE, "meta": self.meta},
                          ensure_ascii=False, sort_keys=True)
        items = sorted(self.fixed.items())
        lines = [head[:-1] + ', "weights": {']
        lines += [f"{json.dumps(feat, ensure_ascii=False)}: {json.dumps(values, separators=(',', ':'))}"
                  + ("," if i < len(items) - 1 else "")
                  for i, (feat, values) in enumerate(items)]
        lines.append("}}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path = WEIGHTS_PATH) -> "LinearModel":
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported weights format {data.get('format')!r}")
        if data.get("fixed_point_scale") != FIXED_POINT_SCALE:
            raise ValueError(f"{path}: weights were saved with another fixed-point scale")
        return cls(list(data["intents"]), data["weights"], data.get("meta", {}))
