"""Accuracy and a per-tier confusion table over labelled JSON-lines files."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .verdict import TIERS

Labelled = tuple[str, str]  # (text, tier)


def load_jsonl(path: Path | str) -> list[Labelled]:
    """Read {"text", "tier"} lines; blank lines are skipped."""
    out: list[Labelled] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out.append((row["text"], row["tier"]))
    return out


@dataclass
class Report:
    total: int = 0
    correct: int = 0
    # confusion[expected][predicted] = count
    confusion: dict[str, dict[str, int]] = field(
        default_factory=lambda: {t: {p: 0 for p in TIERS} for t in TIERS})
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (text, expected, got)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def table(self) -> str:
        """Rows are the expected tier, columns the predicted one, plus per-tier recall."""
        short = {t: t.replace("container-", "c-") for t in TIERS}
        width = max(len(s) for s in short.values()) + 2
        lines = ["expected \\ got".ljust(width + 4) + "".join(short[t].rjust(width) for t in TIERS)
                 + "recall".rjust(width)]
        for t in TIERS:
            row = self.confusion[t]
            n = sum(row.values())
            recall = f"{row[t] / n:.3f}" if n else "-"
            lines.append(short[t].ljust(width + 4) + "".join(str(row[p]).rjust(width) for p in TIERS)
                         + recall.rjust(width))
        lines.append(f"accuracy {self.correct}/{self.total} = {self.accuracy:.4f}")
        return "\n".join(lines)

    def error_lines(self, limit: int = 40) -> str:
        return "\n".join(f"  expected {e:<16} got {g:<16} {t[:90]!r}"
                         for t, e, g in self.errors[:limit])


def evaluate(predict: Callable[[str], str], examples: Iterable[Labelled]) -> Report:
    """`predict` maps text to a tier name."""
    report = Report()
    for text, expected in examples:
        got = predict(text)
        report.total += 1
        report.confusion[expected][got] += 1
        if got == expected:
            report.correct += 1
        else:
            report.errors.append((text, expected, got))
    return report
