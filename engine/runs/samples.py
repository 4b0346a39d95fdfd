"""Find the sample recording, or download it once (with a progress bar and sha256 check).

The samples are real Binance spot BTCUSDT/ETHUSDT, about 11 minutes, from the
hftbacktest project's public sample data (MIT).
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from pathlib import Path
from typing import TextIO

from engine.core.settings import Settings

SAMPLES: dict[str, str] = {
    "btcusdt_20240808.gz": "5d263f4c5379cfc27379ef0e22779aa33804463d1b69c292e9c0714e31f2e1b4",
    "btcusdt_20240809.gz": "2981a27474b8903133cc66e25f4da561140dd061c942b84801b9d8c60e4b3599",
    "ethusdt_20240808.gz": "179a67651ec90f8d299c033f85df29027315a30a738eae74a1388d560f80a737",
    "ethusdt_20240809.gz": "7be2b6113ced0cdb125bfa7607aacb18acd1f3cea9a248d1f53c627c7eed6bb8",
}
LICENSE_NOTE = (
    "Sample data: hftbacktest project (github.com/nkaz001/hftbacktest, examples/spot), MIT licence.\n"
)


class SampleError(RuntimeError):
    """The samples are not here and could not be downloaded."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def samples_in(folder: Path) -> list[Path] | None:
    paths = [folder / name for name in SAMPLES]
    return paths if all(p.is_file() for p in paths) else None


def default_samples_dir(cfg: Settings) -> Path:
    configured = cfg.general.samples_dir
    return Path(os.path.expanduser(configured)) if configured else cfg.data_dir() / "samples"


def find_or_download_samples(cfg: Settings, explicit: str | None, out: TextIO = sys.stderr) -> list[Path]:
    if explicit:
        found = samples_in(Path(explicit))
        if found is None:
            missing = [n for n in SAMPLES if not (Path(explicit) / n).is_file()]
            raise SampleError(f"--samples {explicit}: missing {', '.join(missing)}")
        return found
    folder = default_samples_dir(cfg)
    found = samples_in(folder)
    if found is not None:
        return found
    return download_samples(cfg.general.samples_url, folder, out)


def download_samples(base_url: str, folder: Path, out: TextIO = sys.stderr, timeout: float = 30.0) -> list[Path]:
    """Download each missing sample file, verify its sha256, and keep it only if it matches."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, digest in SAMPLES.items():
        dest = folder / name
        if dest.is_file() and sha256(dest) == digest:
            continue
        url = f"{base_url.rstrip('/')}/{name}"
        tmp = dest.with_name(dest.name + ".part")
        try:
            _fetch(url, tmp, out, timeout)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SampleError(f"cannot download {url}: {exc} (no network? pass --samples DIR)") from exc
        got = sha256(tmp)
        if got != digest:
            tmp.unlink(missing_ok=True)
            raise SampleError(f"{url}: sha256 {got} does not match the expected {digest}; file discarded")
        tmp.replace(dest)
    (folder / "NOTICE").write_text(LICENSE_NOTE, encoding="utf-8")
    return [folder / n for n in SAMPLES]


def _fetch(url: str, dest: Path, out: TextIO, timeout: float) -> None:
    if not url.startswith(("http://", "https://")):
        raise OSError(f"unsupported address {url!r}")
    req = urllib.request.Request(url, headers={"User-Agent": "tradedesk"})  # noqa: S310 - scheme checked above
    with urllib.request.urlopen(req, timeout=timeout) as resp, dest.open("wb") as fh:  # noqa: S310
        total = int(resp.headers.get("Content-Length") or 0)
        done = 0
        name = url.rsplit("/", 1)[-1]
        while chunk := resp.read(1 << 16):
            fh.write(chunk)
            done += len(chunk)
            _progress(out, name, done, total)
        out.write("\n")


def _progress(out: TextIO, name: str, done: int, total: int) -> None:
    if total:
        frac = done / total
        bar = "#" * int(frac * 30)
        out.write(f"\rdownloading {name} [{bar:<30}] {frac:6.1%} {done / 1e6:.1f}/{total / 1e6:.1f} MB")
    else:
        out.write(f"\rdownloading {name} {done / 1e6:.1f} MB")
    out.flush()
