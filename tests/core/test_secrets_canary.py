"""Secrets: a canary key/secret in the environment appears nowhere - logs, the ledger,
checkpoints, settings dumps, the desk's screen, reprs, stderr - even through an auth
error, a traceback, debug logging and a crash."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from urllib.parse import quote, quote_plus

import pytest

from engine.core.secrets import MissingCredentials, Secret, load_credentials, redact, register
from tests.conftest import ROOT
from tests.support.scorecard import record

CANARY_KEY = "CANARYKEY-5b0e1f7a9d2c4e63"
CANARY_SECRET = "CANARYSECRET+8f1d/2a7c=e9b4"  # characters that URL encoding changes


def forms(value: str) -> list[bytes]:
    return [v.encode() for v in {value, quote(value, safe=""), quote_plus(value)}]


def occurrences(blob: bytes) -> int:
    return sum(blob.count(f) for v in (CANARY_KEY, CANARY_SECRET) for f in forms(v))


def test_secret_wrapper_never_shows_itself():
    s = Secret(CANARY_SECRET)
    assert repr(s) == str(s) == f"{s}" == "***"
    assert s.reveal() == CANARY_SECRET
    with pytest.raises(TypeError):
        pickle.dumps(s)
    creds = load_credentials({"TRADEDESK_API_KEY": CANARY_KEY, "TRADEDESK_API_SECRET": CANARY_SECRET})
    assert CANARY_KEY not in repr(creds)
    assert CANARY_SECRET not in repr(creds)
    with pytest.raises(MissingCredentials, match="TRADEDESK_API_SECRET"):
        load_credentials({"TRADEDESK_API_KEY": CANARY_KEY})
    register(CANARY_KEY)
    assert redact(f"url?apiKey={quote(CANARY_KEY)} and {CANARY_KEY}") == "url?apiKey=*** and ***"


def test_canary_appears_nowhere_after_a_full_session(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
           "TRADEDESK_API_KEY": CANARY_KEY, "TRADEDESK_API_SECRET": CANARY_SECRET,
           "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    r = subprocess.run([sys.executable, "-m", "tests.support.secrets_session", str(data)], cwd=ROOT, env=env,
                       capture_output=True, timeout=240)
    out = r.stdout + r.stderr
    # the session did everything it was meant to (otherwise the scan below proves nothing)
    assert r.returncode == 1, out[-3000:]
    assert b"an uncaught crash carrying the secret ***" in r.stderr, out[-3000:]
    assert b"trading HALTED" in r.stderr
    assert b"TRADEDESK_API_KEY" in r.stderr
    files = sorted(p for p in data.rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert {"tradedesk.log", "live.db", "settings-dump.json", "settings-dump.toml", "snapshot.txt", "desk.svg"} <= names
    assert any(p.suffix == ".pt" for p in files), names
    log_text = (data / "logs" / "tradedesk.log").read_bytes()
    assert b"a traceback with the secret in it" in log_text
    assert b"Traceback" in log_text
    assert b"secret=***" in log_text
    assert b"DEBUG" in log_text
    assert b"AuthenticationError" in log_text

    found = {str(p.relative_to(data)): occurrences(p.read_bytes()) for p in files}
    found["<stdout+stderr>"] = occurrences(out)
    leaks = {k: v for k, v in found.items() if v}
    total = sum(found.values())
    record("secrets", {"secret occurrences": total, "places scanned": len(found)})
    assert total == 0, leaks


def test_redacting_filter_scrubs_records_from_any_logger(tmp_path):
    from engine.core import secrets

    register(CANARY_SECRET)
    handler = logging.FileHandler(tmp_path / "x.log")
    handler.addFilter(secrets.RedactingFilter())
    lg = logging.getLogger("third.party")
    lg.addHandler(handler)
    lg.propagate = False
    try:
        lg.error("oops %s", CANARY_SECRET)
        try:
            raise ValueError(CANARY_SECRET)
        except ValueError:
            lg.exception("with traceback")
    finally:
        lg.removeHandler(handler)
        handler.close()
    text = (tmp_path / "x.log").read_bytes()
    assert b"oops ***" in text
    assert occurrences(text) == 0
