"""One session of the rebuilt old design, shared by the rows that compare with it.

The same traffic warmwire gets in its rows: greetings one at a time (the inline row: the old
design ran every message in a container), then bursts of new chats arriving together (5 and
20: the acquisition rows, and the overload row for 20). Each reply carries the times of its
stages (see orchestrator.py); `stages()` turns them into milliseconds.
"""

from __future__ import annotations

import time

from .client import OldDesign, stage_ms

SINGLES = {True: 1, False: 5}
BURSTS = (5, 20)
GREETING = "hi"
TASK = "Please debug this stack trace and explain why the parser fails: KeyError 'port'"
# A reply slower than this is lost (the old design never gives up on a message, so a row that
# waits longer only waits longer: 20 jobs in waves of 5 take about 4 cold starts here).
ANSWER_DEADLINE = 300.0
STAGES = {
    "total": ("written", "replied"),      # message written -> reply sent (client to client)
    "acquire": ("seen", "ready"),          # job in the queue -> a container ready for it
    "queue": ("seen", "started"),          # waiting for one of the 5 slots
    "cold_start": ("started", "ready"),    # docker run -> the runner's signed `ready`
    "ipc": ("result", "result_seen"),      # result file written -> seen by the 1 s reader
    "poll": ("written", "seen"),           # message written -> seen by the 2 s message loop
}


def stages(records: list[dict]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in STAGES}
    for record in records:
        for name, (start, end) in STAGES.items():
            value = stage_ms(record, start, end)
            if value is not None:
                out[name].append(value)
    return out


_SESSIONS: dict[bool, dict] = {}


def session(quick: bool, progress) -> dict:
    """The one old-design session of this benchmark run (measured on first use)."""
    if quick not in _SESSIONS:
        _SESSIONS[quick] = measure(quick, progress)
    return _SESSIONS[quick]


def measure(quick: bool, progress) -> dict:
    """{"singles": [...], "burst_5": [...], "burst_20": [...]} reply records, plus the ids
    sent per phase (a missing reply is a message the old design never answered)."""
    result: dict = {"sent": {}}
    with OldDesign() as old:
        records = []
        for number in range(SINGLES[quick]):
            message_id = old.send(GREETING)
            records += old.wait([message_id], ANSWER_DEADLINE).values()
            progress("old design: greetings one at a time", number, SINGLES[quick])
        result["singles"], result["sent"]["singles"] = records, SINGLES[quick]
        for size in BURSTS:
            started = time.monotonic()
            ids = [old.send(TASK) for _ in range(size)]
            answers = old.wait(ids, ANSWER_DEADLINE,
                               lambda done, total: progress(f"old design: burst of {size}", done, total))
            result[f"burst_{size}"] = list(answers.values())
            result["sent"][f"burst_{size}"] = size
            result[f"burst_{size}_seconds"] = time.monotonic() - started
    return result
