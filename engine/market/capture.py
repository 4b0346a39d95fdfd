"""Read ``<recv_ns> <json>`` capture files (gzip or plain) and merge them in time order.

Several files of one symbol play one after another in name order (a symbol's
``_20240808`` continues in its ``_20240809``); files of different symbols, or
multi-symbol recordings, are merged by receive stamp.
"""

from __future__ import annotations

import gzip
import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from io import BufferedIOBase
from pathlib import Path

_SYMBOL_IN_NAME = re.compile(r"^([a-z0-9]+?)[_.-]\d{8}", re.IGNORECASE)


@dataclass(frozen=True)
class CaptureLine:
    ts_recv: int
    payload: bytes
    source: int  # index of the stream of files the line came from


def symbol_from_name(path: Path) -> str | None:
    """``btcusdt_20240808.gz`` → ``BTCUSDT``; ``None`` if the name carries no symbol."""
    m = _SYMBOL_IN_NAME.match(path.name)
    return m.group(1).upper() if m else None


def open_capture(path: Path) -> BufferedIOBase:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")  # the caller closes it


class CaptureError(ValueError):
    """A capture file that cannot be read at all (missing, unreadable, truncated gzip)."""


def _lines(paths: list[Path], source: int, counters: dict[str, int]) -> Iterator[CaptureLine]:
    for path in paths:
        try:
            fh = open_capture(path)
        except OSError as exc:
            raise CaptureError(f"cannot open {path}: {exc}") from exc
        with fh:
            try:
                for raw in fh:
                    line = raw.rstrip(b"\r\n")
                    if not line:
                        continue
                    stamp, sep, payload = line.partition(b" ")
                    if not sep or not stamp.isdigit():
                        counters["bad_line"] = counters.get("bad_line", 0) + 1
                        continue
                    yield CaptureLine(int(stamp), payload, source)
            except (EOFError, gzip.BadGzipFile, OSError):
                # A truncated recording (the recorder was killed) keeps what was read.
                counters["truncated_files"] = counters.get("truncated_files", 0) + 1


def group_files(paths: list[Path]) -> list[tuple[str | None, list[Path]]]:
    """Group by symbol in the file name, each group sorted by name (i.e. date)."""
    groups: dict[str | None, list[Path]] = {}
    anonymous: list[tuple[str | None, list[Path]]] = []
    for p in paths:
        sym = symbol_from_name(p)
        if sym is None:
            anonymous.append((None, [p]))
        else:
            groups.setdefault(sym, []).append(p)
    out: list[tuple[str | None, list[Path]]] = [(s, sorted(ps, key=lambda x: x.name)) for s, ps in groups.items()]
    return out + anonymous


def merged_lines(paths: list[Path], counters: dict[str, int] | None = None) -> tuple[list[str | None], Iterator[CaptureLine]]:
    """Return (symbol hint per source, merged line iterator in receive-time order)."""
    counters = counters if counters is not None else {}
    for p in paths:
        if not p.is_file():
            raise CaptureError(f"no such recording: {p}")
    groups = group_files(paths)
    hints = [sym for sym, _ in groups]
    iters = [_lines(ps, i, counters) for i, (_, ps) in enumerate(groups)]
    if len(iters) == 1:
        return hints, iters[0]
    return hints, heapq.merge(*iters, key=lambda cl: cl.ts_recv)


def capture_span(paths: list[Path]) -> tuple[int, int]:
    """The first and last receive stamps of a recording (one quick pass over the lines)."""
    _, lines = merged_lines(paths)
    first = last = None
    for cl in lines:
        if first is None:
            first = cl.ts_recv
        last = cl.ts_recv
    if first is None or last is None:
        raise CaptureError(f"no stamped lines in {', '.join(str(p) for p in paths)}")
    return first, last
