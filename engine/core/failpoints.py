"""Named crash points for the crash harness (``tests/crash_worker.py``).

The order path calls ``hit("after_intent")`` and friends at the moments where a crash is
most dangerous. Normally nothing is armed and ``hit`` is one dictionary lookup. The
harness arms one point through the environment, ``TRADEDESK_CRASH_AT=<name>:<n>``, and
the process SIGKILLs itself on the n-th time it gets there: no cleanup, no flush, no
``finally``, exactly as a power cut or the OOM killer would leave it.

Points: ``after_intent`` (the order's intent is committed, nothing sent yet),
``after_send`` (the venue has the order, its answer is not journaled yet),
``after_fill`` (the fill is committed, the position is not updated yet),
``after_position`` (the position is written, the events are not published yet).
"""

from __future__ import annotations

import os
import signal

POINTS = ("after_intent", "after_send", "after_fill", "after_position")

_armed: dict[str, int] = {}


def arm(name: str, nth: int = 1) -> None:
    if name not in POINTS:
        raise ValueError(f"unknown crash point {name!r} (known: {', '.join(POINTS)})")
    _armed[name] = nth


def _from_env() -> None:
    spec = os.environ.get("TRADEDESK_CRASH_AT", "")
    if spec:
        name, _, n = spec.partition(":")
        arm(name, int(n or "1"))


def hit(name: str) -> None:
    if not _armed:
        return
    left = _armed.get(name)
    if left is None:
        return
    if left <= 1:
        os.kill(os.getpid(), signal.SIGKILL)
    _armed[name] = left - 1


_from_env()
