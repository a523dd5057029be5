"""Train the router model from the shipped corpus and write data/weights.json.

    python -m services.router.classifier.train           # retrain, write weights
    python -m services.router.classifier.train --check   # exit 1 if weights are stale
    python -m services.router.classifier.train --cv 5    # k-fold cross-validation, no write
    python -m services.router.classifier.train --eval tests/data/router_dev.jsonl

Training is deterministic (fixed seed, ordered features, no hash-order dependence), so the
same corpus always gives the same weights file.  Pure Python; takes some seconds.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import time

from .classifier import Classifier
from .corpus import Example, augment, corpus_digest, feature_digest, load_corpus, tier_counts
from .evaluate import evaluate, load_jsonl
from .model import WEIGHTS_PATH, LinearModel, to_fixed
from .text import features, normalise
from .verdict import LEARNED_INTENTS, TIERS

SEED = 20240601
EPOCHS = 40
LEARNING_RATE = 2.0
LR_DECAY = 0.15          # lr / (1 + decay * epoch): big steps first, fine-tuning last
L2 = 1e-5                # per-example L2 strength, applied as one decay per epoch
GRAD_EPSILON = 1e-4      # skip near-zero gradient components (most of them after warm-up)
MIN_FEATURE_COUNT = 2    # a feature must occur in this many corpus messages to be learned


def _vocabulary(examples: list[Example]) -> set[str]:
    """Features seen in at least MIN_FEATURE_COUNT distinct corpus messages.

    Counted before augmentation (a variant repeats its source's features); rarer features
    mostly memorise single messages and would bloat the shipped weights.
    """
    counts: dict[str, int] = {}
    for text, _intent in examples:
        for feat in set(features(text, normalise(text))):
            counts[feat] = counts.get(feat, 0) + 1
    return {feat for feat, count in counts.items() if count >= MIN_FEATURE_COUNT}


def _featurise(examples: list[Example], intents: list[str],
               vocabulary: set[str]) -> list[tuple[list[str], float, int]]:
    """(known features, unit-length scale, intent index) per example.

    The scale counts every feature, known or not, exactly as LinearModel.scores does.
    """
    index = {name: k for k, name in enumerate(intents)}
    data = []
    for text, intent in examples:
        feats = features(text, normalise(text))
        data.append(([f for f in feats if f in vocabulary], 1.0 / math.sqrt(len(feats)),
                     index[intent]))
    return data


def fit(examples: list[Example], seed: int = SEED, epochs: int = EPOCHS,
        log: bool = False) -> LinearModel:
    """Multinomial logistic regression by SGD over the augmented examples."""
    # Grouped by tier (in TIERS order) so each tier is a contiguous slice of the output.
    intents = sorted(LEARNED_INTENTS, key=lambda i: (TIERS.index(LEARNED_INTENTS[i]), i))
    k_count = len(intents)
    data = _featurise(augment(examples, seed), intents, _vocabulary(examples))
    weights: dict[str, list[float]] = {}
    for feats, _scale, _y in data:
        for f in feats:
            if f not in weights:
                weights[f] = [0.0] * k_count
    rng = random.Random(seed)
    order = list(range(len(data)))
    for epoch in range(epochs):
        rng.shuffle(order)
        lr = LEARNING_RATE / (1.0 + LR_DECAY * epoch)
        loss = 0.0
        for i in order:
            feats, scale, y = data[i]
            vecs = [weights[f] for f in feats]
            scores = [s * scale for s in map(sum, zip(*vecs))]
            top = max(scores)
            exps = [math.exp(s - top) for s in scores]
            total = sum(exps)
            loss -= math.log(exps[y] / total)
            for k in range(k_count):
                grad = exps[k] / total - (1.0 if k == y else 0.0)
                if -GRAD_EPSILON < grad < GRAD_EPSILON:
                    continue
                step = lr * grad * scale
                for v in vecs:
                    v[k] -= step
        decay = math.exp(-lr * L2 * len(data))
        for v in weights.values():
            for k in range(k_count):
                v[k] *= decay
        if log:
            print(f"  epoch {epoch + 1:2d}  lr {lr:.3f}  loss {loss / len(data):.4f}", file=sys.stderr)
    shipped = {f: [to_fixed(w) for w in v] for f, v in weights.items()}
    meta = {"corpus_sha256": corpus_digest(), "features_sha256": feature_digest(),
            "examples": len(examples),
            "augmented": len(data), "seed": seed, "epochs": epochs}
    return LinearModel(intents, shipped, meta)


def cross_validate(examples: list[Example], folds: int) -> None:
    rng = random.Random(SEED)
    shuffled = examples[:]
    rng.shuffle(shuffled)
    correct = total = 0
    for fold in range(folds):
        test = shuffled[fold::folds]
        train = [e for i, e in enumerate(shuffled) if i % folds != fold]
        clf = Classifier(fit(train))
        report = evaluate(lambda t: clf.classify(t).tier,
                          [(t, LEARNED_INTENTS[i]) for t, i in test])
        correct += report.correct
        total += report.total
        print(f"fold {fold + 1}: {report.accuracy:.4f}")
        print(report.error_lines())
    print(f"cross-validated tier accuracy: {correct}/{total} = {correct / total:.4f}")


def stale_reason(meta: dict) -> str | None:
    """Why shipped weights (their `meta`) no longer match this code and corpus, or None."""
    if meta.get("corpus_sha256") != corpus_digest():
        return "weights are stale (corpus changed): run python -m services.router.classifier.train"
    if meta.get("features_sha256") != feature_digest():
        return "weights are stale (feature code changed): run python -m services.router.classifier.train"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.router.classifier.train",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the weights are stale")
    parser.add_argument("--cv", type=int, metavar="K", help="K-fold cross-validation, no write")
    parser.add_argument("--eval", metavar="JSONL", action="append", default=[],
                        help="train in memory and report accuracy on this file, no write")
    parser.add_argument("--verbose", action="store_true", help="print the loss per epoch")
    args = parser.parse_args(argv)

    if args.check:
        problem = stale_reason(LinearModel.load().meta)
        print(problem or "weights match the corpus and the feature code")
        return 1 if problem else 0
    examples = load_corpus()
    print(f"corpus: {len(examples)} examples {tier_counts(examples)}")
    if args.cv:
        cross_validate(examples, args.cv)
        return 0
    started = time.perf_counter()
    model = fit(examples, log=args.verbose)
    print(f"trained on {model.meta['augmented']} augmented examples, "
          f"{len(model.fixed)} features, {time.perf_counter() - started:.1f} s")
    if args.eval:
        clf = Classifier(model)
        for path in args.eval:
            report = evaluate(lambda t: clf.classify(t).tier, load_jsonl(path))
            print(f"\n{path}\n{report.table()}\n{report.error_lines()}")
        return 0
    model.save(WEIGHTS_PATH)
    print(f"wrote {WEIGHTS_PATH} ({WEIGHTS_PATH.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
