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

``TRADEDESK_FAIL_AT=<name>:<n>`` instead makes the n-th and every later arrival there raise
``OSError(ENOSPC)``, as a full disk would: the harness for failures that must be reported,
not survived.

Checkpoint saves (``models.common.checkpoint``, which cannot import the engine: the model
host hands it :func:`hit`): ``checkpoint_mid_write`` (half of the new archive is in the temp
file), ``checkpoint_after_fsync`` (the temp file is whole and synced), ``checkpoint_after_prev``
(the current file is linked to ``.prev.pt``), ``checkpoint_after_quarantine`` (a current file
that would be refused is linked into ``quarantine/``), ``checkpoint_after_replace`` (the new
file is in place, the directory not synced yet).
"""

from __future__ import annotations

import errno
import os
import signal

POINTS = ("after_intent", "after_send", "after_fill", "after_position",
          "checkpoint_mid_write", "checkpoint_after_fsync", "checkpoint_after_prev", "checkpoint_after_quarantine",
          "checkpoint_after_replace")

_armed: dict[str, int] = {}
_failing: dict[str, int] = {}


def arm(name: str, nth: int = 1) -> None:
    """SIGKILL this process the ``nth`` time it reaches ``name``."""
    if name not in POINTS:
        raise ValueError(f"unknown crash point {name!r} (known: {', '.join(POINTS)})")
    _armed[name] = nth


def fail(name: str, nth: int = 1) -> None:
    """Raise ``OSError(ENOSPC)`` the ``nth`` and every later time this process reaches ``name``."""
    if name not in POINTS:
        raise ValueError(f"unknown failure point {name!r} (known: {', '.join(POINTS)})")
    _failing[name] = nth


def disarm() -> None:
    _armed.clear()
    _failing.clear()


def _from_env() -> None:
    for var, how in (("TRADEDESK_CRASH_AT", arm), ("TRADEDESK_FAIL_AT", fail)):
        spec = os.environ.get(var, "")
        if spec:
            name, _, n = spec.partition(":")
            how(name, int(n or "1"))


def hit(name: str) -> None:
    if not _armed and not _failing:
        return
    if name in _failing:
        if _failing[name] <= 1:
            raise OSError(errno.ENOSPC, f"No space left on device (injected at {name})")
        _failing[name] -= 1
    left = _armed.get(name)
    if left is None:
        return
    if left <= 1:
        os.kill(os.getpid(), signal.SIGKILL)
    _armed[name] = left - 1


_from_env()
