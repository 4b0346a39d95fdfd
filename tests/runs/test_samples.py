"""The demo's sample lookup and its one-time download, against a local HTTP server."""

from __future__ import annotations

import http.server
import io
import threading
from functools import partial

import pytest

from engine.runs import samples
from engine.runs.samples import SampleError, find_or_download_samples


@pytest.fixture
def http_dir(tmp_path):
    """Serve a folder on 127.0.0.1 (port 0); shut down after the test."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/spot"
    server.shutdown()
    server.server_close()


def test_download_verifies_sha256_and_is_done_once(data_files, http_dir, cfg, tmp_path):
    root, url = http_dir
    (root / "spot").mkdir()
    for p in data_files:
        (root / "spot" / p.name).write_bytes(p.read_bytes())
    cfg = cfg.with_overrides([f'general.samples_url="{url}"', f'general.samples_dir="{tmp_path / "s"}"'])
    progress = io.StringIO()
    paths = find_or_download_samples(cfg, None, progress)
    assert [p.name for p in paths] == list(samples.SAMPLES)
    assert all(samples.sha256(p) == samples.SAMPLES[p.name] for p in paths)
    assert "downloading btcusdt_20240808.gz" in progress.getvalue() and "100.0%" in progress.getvalue()
    # second time: found locally, nothing downloaded
    for p in (root / "spot").iterdir():
        p.unlink()
    again = io.StringIO()
    assert find_or_download_samples(cfg, None, again) == paths
    assert again.getvalue() == ""


def test_checksum_mismatch_is_refused_and_discarded(http_dir, cfg, tmp_path):
    root, url = http_dir
    (root / "spot").mkdir()
    for name in samples.SAMPLES:
        (root / "spot" / name).write_bytes(b"not the real file")
    dest = tmp_path / "s"
    cfg = cfg.with_overrides([f'general.samples_url="{url}"', f'general.samples_dir="{dest}"'])
    with pytest.raises(SampleError, match="sha256"):
        find_or_download_samples(cfg, None, io.StringIO())
    assert not any(dest.glob("*.gz")) and not any(dest.glob("*.part"))


def test_unreachable_server_says_so(cfg, tmp_path):
    cfg = cfg.with_overrides(['general.samples_url="http://127.0.0.1:9/spot"', f'general.samples_dir="{tmp_path}"'])
    with pytest.raises(SampleError, match="no network"):
        find_or_download_samples(cfg, None, io.StringIO())


def test_explicit_samples_dir(data_files, tmp_path, cfg):
    assert find_or_download_samples(cfg, str(data_files[0].parent), io.StringIO()) == data_files
    with pytest.raises(SampleError, match="missing"):
        find_or_download_samples(cfg, str(tmp_path), io.StringIO())
