"""Smart query router classifier: maps a chat message to one of four answer tiers.

    from services.router.classifier import Classifier, Verdict, TIERS
    clf = Classifier.load()
    clf.classify("hi! can you debug this stack trace").tier  # -> "container-full"
"""
from .classifier import Classifier
from .verdict import TIERS, Verdict

__all__ = ["Classifier", "TIERS", "Verdict"]
