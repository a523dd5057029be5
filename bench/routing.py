"""Row 8: how much of a realistic message mix skips the container, and what a query costs.

The mix draws held-out messages (never used to train the classifier) in the proportions
below, an assumption about a personal assistant's traffic: mostly greetings, thanks and
quick notes, fewer real tasks. Each message is classified by the router's classifier; a
container message is priced with the configured price table and the token budget of its
tier. Baseline: the old design, where every message went to the big model with full
context.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Callable

from services.router.classifier import Classifier

from .stats import Row

HELDOUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "router_heldout.jsonl"
# Share of each tier in the mix (what users send), an explicit assumption.
MIX = {"inline": 0.45, "oracle-only": 0.27, "container-light": 0.16, "container-full": 0.12}
MESSAGES = {True: 2000, False: 10000}
# (input, output) tokens a job of each tier uses: a small model with little context, or the
# big model with history and knowledge passages.
TOKENS = {"container-light": (800, 200), "container-full": (4000, 800)}
SKIP_TARGET = 0.70
ACCURACY_TARGET = 0.95
PER_MILLION = 1_000_000
SEED = 7


def _price(config, model: str, tokens: tuple[int, int]) -> float:
    price = config.prices[model]
    return (tokens[0] * price.input + tokens[1] * price.output) / PER_MILLION


def run(system, quick: bool, progress: Callable[[str, int, int], None]) -> Row:
    config = system.config
    examples = [json.loads(line) for line in HELDOUT.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_tier: dict[str, list[str]] = {}
    for example in examples:
        by_tier.setdefault(example["tier"], []).append(example["text"])
    rng = random.Random(SEED)
    count = MESSAGES[quick]
    tiers = rng.choices(list(MIX), weights=list(MIX.values()), k=count)
    classifier = Classifier.load()
    routed: Counter[str] = Counter()
    correct = 0
    cost = 0.0
    for number, tier in enumerate(tiers):
        verdict = classifier.classify(rng.choice(by_tier[tier]))
        routed[verdict.tier] += 1
        correct += verdict.tier == tier
        if verdict.tier == "container-light":
            cost += _price(config, config.agents.light_model, TOKENS["container-light"])
        elif verdict.tier == "container-full":
            cost += _price(config, config.agents.full_model, TOKENS["container-full"])
        if number % 500 == 0:
            progress("routing: classify a realistic mix", number, count)
    progress("routing: classify a realistic mix", count - 1, count)
    skipped = (routed["inline"] + routed["oracle-only"]) / count
    accuracy = correct / count
    per_query = cost / count
    baseline = _price(config, config.agents.full_model, TOKENS["container-full"])
    return Row(
        name="routing_cost", unit="USD/query", p50=per_query, p99=None, baseline_p50=baseline,
        baseline_p99=None, ratio=baseline / per_query if per_query else float("inf"),
        target=f">= {SKIP_TARGET:.0%} skip the container at >= {ACCURACY_TARGET:.0%} accuracy",
        met=skipped >= SKIP_TARGET and accuracy >= ACCURACY_TARGET, samples=count, baseline_samples=count,
        note=(f"NOT YET A REPLAY through the live router (issue 17 item 4 is left): the classifier on an "
              f"assumed mix of held-out messages, containers priced at assumed token counts, the baseline "
              f"priced the same way; skipped the container: {skipped:.1%}; tier accuracy {accuracy:.1%}; routed "
              + ", ".join(f"{tier} {routed[tier]}" for tier in MIX)
              + f"; models {config.agents.light_model} / {config.agents.full_model}"),
        details={"skipped_share": skipped, "accuracy": accuracy, **{f"routed_{t}": routed[t] for t in MIX}})
