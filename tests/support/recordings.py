"""Recordings made from the real samples, edited in a temp folder (never in the repo): a
prefix of a file, a crossing diff with a valid id chain, a REST snapshot the recorder
would have written, lines moved, duplicated or spelt badly."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson

from engine.core.events import BookDelta, BookSnapshot
from engine.market.book import SyncedBook
from engine.market.parse import Parser


def read_lines(path: Path, limit: int | None = None) -> list[bytes]:
    """The first ``limit`` lines of a recording, each with its newline."""
    out: list[bytes] = []
    with gzip.open(path, "rb") as fh:
        for line in fh:
            out.append(line if line.endswith(b"\n") else line + b"\n")
            if limit is not None and len(out) >= limit:
                break
    return out


def write_gz(path: Path, lines: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as fh:
        fh.writelines(lines)
    return path


def split(line: bytes) -> tuple[int, dict]:
    stamp, _, payload = line.partition(b" ")
    return int(stamp), orjson.loads(payload)


def join(stamp: int, obj: dict) -> bytes:
    return str(stamp).encode() + b" " + orjson.dumps(obj) + b"\n"


def depth_indices(lines: list[bytes]) -> list[int]:
    """Line numbers of the depth diffs, in order."""
    return [i for i, ln in enumerate(lines) if b'@depth' in ln[:80]]


def trade_indices(lines: list[bytes]) -> list[int]:
    return [i for i, ln in enumerate(lines) if b'@trade"' in ln[:80]]


def with_bid(line: bytes, price: str, qty: str) -> bytes:
    """The same depth diff (same U/u, so the chain stays valid) with one more bid level."""
    stamp, obj = split(line)
    obj["data"]["b"].append([price, qty])
    return join(stamp, obj)


def snapshot_after(lines: list[bytes], upto: int, symbol: str) -> bytes:
    """The exchange's true book right after line ``upto`` as a recorded REST snapshot line
    (``{"lastUpdateId":…,"bids":…,"asks":…}``), from the lines as given (apply it to a
    clean copy of the lines so the snapshot holds no injected level)."""
    parser = Parser()
    book = SyncedBook(symbol)
    stamp = 0
    for line in lines[:upto + 1]:
        stamp = int(line.partition(b" ")[0])
        ev = parser.parse_capture_line(line.rstrip(b"\n"), symbol)
        if isinstance(ev, BookSnapshot):
            book.on_snapshot(ev)
        elif isinstance(ev, BookDelta):
            book.on_delta(ev)
    assert book.state.value == "LIVE", "the clean chain must be LIVE where the snapshot is taken"
    body = {
        "lastUpdateId": book.last_update_id,
        "bids": [[str(p), str(q)] for p, q in book.book.top_bids(5000)],
        "asks": [[str(p), str(q)] for p, q in book.book.top_asks(5000)],
    }
    return str(stamp + 1).encode() + b" " + orjson.dumps(body) + b"\n"
