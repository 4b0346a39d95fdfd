"""Read ``<recv_ns> <json>`` capture files (gzip or plain) and merge them in time order.

Several files of one symbol play one after another in name order (a symbol's
``_20240808`` continues in its ``_20240809``); files of different symbols, or
multi-symbol recordings, are merged by receive stamp.

A file that is not a recording is refused before anything starts, naming the file and
what is wrong (:func:`check_recording`): empty, another compression than gzip, named
``.gz`` but not gzip, gzip damaged before its first line, or no ``<recv_ns> <json>`` line
in its first MiB. A recording cut short by a crash (a truncated gzip) still replays what
it holds, with a warning naming it.
"""

from __future__ import annotations

import gzip
import heapq
import logging
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BufferedIOBase
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

#: How much of a file (decompressed) :func:`check_recording` reads looking for a valid line.
SNIFF_BYTES = 1 << 20

#: Magic numbers of the compressions and containers people hand us instead of gzip.
_MAGIC = ((b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"PK\x03\x04", "zip"),
          (b"7z\xbc\xaf\x27\x1c", "7z"))

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
    """A capture file that cannot be replayed (missing, unreadable, not a recording)."""


@dataclass
class RecordingInfo:
    """What :func:`check_recording` saw at the start of a file."""

    path: Path
    first_ns: int  # receive stamp of the first valid line
    symbols: set[str] = field(default_factory=set)  # symbols of the valid lines read (and the file name's)
    first_symbol: str | None = None  # the symbol of the first valid line, if it names one


def _line_symbol(obj: dict[str, object], hint: str | None) -> str | None:
    stream = obj.get("stream")
    if isinstance(stream, str):
        return stream.partition("@")[0].upper() or None
    if "lastUpdateId" in obj:
        return hint
    s = obj.get("s")
    return s.upper() if isinstance(s, str) else None


def check_recording(path: Path) -> RecordingInfo:
    """Refuse a file that is not a recording (:class:`CaptureError` naming it and why);
    else say what its first MiB holds. Reads at most :data:`SNIFF_BYTES` of data."""
    if not path.is_file():
        raise CaptureError(f"no such recording: {path}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise CaptureError(f"cannot open {path}: {exc}") from exc
    if not head:
        raise CaptureError(f"{path}: empty file (0 bytes), not a recording")
    gz = head[:2] == b"\x1f\x8b"
    if not gz:
        other = next((name for magic, name in _MAGIC if head.startswith(magic)), None)
        if other is not None:
            raise CaptureError(f"{path}: {other} data, not a recording; recordings are plain text or gzip "
                               f"(decompress it, or recompress it with gzip)")
        if path.suffix.lower() == ".gz":
            raise CaptureError(f"{path}: named .gz but not gzip data (it starts with bytes {head[:4].hex(' ')})")
    hint = symbol_from_name(path)
    info: RecordingInfo | None = None
    read = lines = 0
    try:
        with open_capture(path) as fh:
            while raw := fh.readline(SNIFF_BYTES - read):  # bounded even if the file has no newline
                read += len(raw)
                lines += 1
                stamp, sep, payload = raw.rstrip(b"\r\n").partition(b" ")
                if sep and stamp.isdigit() and payload[:1] == b"{":
                    try:
                        obj = orjson.loads(payload)
                    except orjson.JSONDecodeError:
                        obj = None
                    if type(obj) is dict:
                        sym = _line_symbol(obj, hint)
                        if info is None:
                            info = RecordingInfo(path, int(stamp), {hint} if hint else set(), sym)
                        if sym:
                            info.symbols.add(sym)
                if read >= SNIFF_BYTES:
                    break
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        if info is None:
            raise CaptureError(f"{path}: damaged gzip data before the first complete line ({exc})") from None
        return info  # cut short later on: the replay keeps what it can read, with a warning
    if info is None:
        if lines == 0:
            raise CaptureError(f"{path}: the gzip data holds nothing (0 lines), not a recording")
        where = "in the file" if read < SNIFF_BYTES else f"in its first {SNIFF_BYTES >> 20} MiB"
        raise CaptureError(f"{path}: no valid `<recv_ns> <json>` line {where} ({lines} lines read), not a recording")
    return info


def check_recordings(paths: list[Path]) -> list[RecordingInfo]:
    """:func:`check_recording` for each file; the first refusal raises."""
    return [check_recording(p) for p in paths]


#: The largest receive stamp a line may carry: ns since 1970 up to the year 2262 (int64).
MAX_STAMP_NS = (1 << 63) - 1


def capture_stamp(stamp: bytes) -> int | None:
    """A line's receive stamp (ASCII digits) in ns, or None when it is not one: past int64
    it is not a nanosecond time, and no SQLite INTEGER would hold it."""
    if len(stamp) > 19:  # (never converts a huge digit string)
        return None
    ts = int(stamp)
    return ts if ts <= MAX_STAMP_NS else None


def _lines(paths: list[Path], source: int, counters: dict[str, int]) -> Iterator[CaptureLine]:
    for path in paths:
        try:
            fh = open_capture(path)
        except OSError as exc:
            raise CaptureError(f"cannot open {path}: {exc}") from exc
        n = 0
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
                    ts = capture_stamp(stamp)
                    if ts is None:
                        counters["bad_stamp"] = counters.get("bad_stamp", 0) + 1
                        continue
                    n += 1
                    yield CaptureLine(ts, payload, source)
            except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
                # A truncated recording (the recorder was killed) keeps what was read.
                counters["truncated_files"] = counters.get("truncated_files", 0) + 1
                log.warning("recording %s is cut short (%s): replayed the %d lines before the cut", path, exc, n)


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
    check_recordings(paths)  # a file that is no recording is refused here, naming it
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
