"""Reliability figures: printed by the test run, and merged into the JSON scorecard named by
``TRADEDESK_SCORECARD`` when it is set (RELIABILITY.md's last column)."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

RECORDED: list[tuple[str, dict[str, Any]]] = []  # shown at the end of the run by conftest


def record(area: str, figures: dict[str, Any]) -> None:
    RECORDED.append((area, dict(figures)))
    print(f"\nSCORECARD {area}: " + ", ".join(f"{k} = {v}" for k, v in figures.items()))
    target = os.environ.get("TRADEDESK_SCORECARD")
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several test processes may write at once
        data: dict[str, Any] = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                data = {}
        data.setdefault(area, {}).update(figures)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(path)
