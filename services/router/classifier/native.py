"""The classifier's C extension (`_native.c`), or None where it was not built.

`pip install`, so `./run.sh`, builds it where a C compiler and Python's headers are found.
Every part of it has a pure-Python twin that gives the same answers (tests compare them):
the scorer in scoring.py, the Thai cue matcher in cues.py.
"""
from __future__ import annotations

import importlib

try:
    extension = importlib.import_module("._native", __package__)
except ImportError as exc:  # not built: no C compiler or no Python headers at install time
    extension, MISSING = None, str(exc)
else:
    MISSING = None
