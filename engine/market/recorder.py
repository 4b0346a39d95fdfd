"""Lossless capture of a live session in the ``<recv_ns> <json>`` line format.

Every websocket text frame is written verbatim with the stamp the engine saw, in the
order the engine applied it; REST depth snapshots are written as
``{"stream":"<sym>@depthSnapshot","data":<REST body>}`` (the body verbatim), which the
parser decodes, so ``tradedesk replay FILE`` rebuilds the same books, trades and bars.
A ``.gz`` name gives a gzip file; a recorder killed mid-write leaves a truncated gzip
that the replay reader still reads up to the cut.

Two things a line cannot hold are noted rather than written: binary frames (Binance
sends none; counted) and raw line breaks inside a frame (JSON whitespace, written as
spaces so one frame stays one line).
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import IO


class Recorder:
    """Append-only writer of capture lines; ``close()`` (or the context manager) flushes."""

    def __init__(self, path: Path | str, flush_every_s: float = 2.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[bytes]
        if self.path.name.endswith(".gz"):
            self._fh = gzip.open(self.path, "wb", compresslevel=5)  # type: ignore[assignment]  # noqa: SIM115 - closed in close()
        else:
            self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self.lines = 0
        self.snapshots = 0
        self.bytes = 0
        self.newlines_replaced = 0
        self.flush_every_s = flush_every_s
        self._last_flush = time.monotonic()
        self.closed = False

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, ts_recv: int, payload: bytes) -> None:
        if b"\n" in payload or b"\r" in payload:
            self.newlines_replaced += 1
            payload = payload.replace(b"\r", b" ").replace(b"\n", b" ")
        line = b"%d %s\n" % (ts_recv, payload)
        self._fh.write(line)
        self.lines += 1
        self.bytes += len(line)
        now = time.monotonic()
        if now - self._last_flush >= self.flush_every_s:
            self.flush()

    def write_snapshot(self, ts_recv: int, symbol: str, body: bytes) -> None:
        """A REST depth body, wrapped so the line names its symbol."""
        self.snapshots += 1
        self.write(ts_recv, b'{"stream":"%s@depthSnapshot","data":%s}' % (symbol.lower().encode(), body.strip()))

    def flush(self) -> None:
        if not self.closed:
            self._fh.flush()
            self._last_flush = time.monotonic()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._fh.close()

    def info(self) -> dict[str, object]:
        return {"path": str(self.path), "lines": self.lines, "snapshots": self.snapshots, "bytes": self.bytes}
