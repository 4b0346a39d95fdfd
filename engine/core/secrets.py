"""API credentials: read from the environment only, never printed, logged, stored or shown.

- :class:`Secret` wraps a value; its ``repr``/``str`` are ``***`` and it refuses to be
  pickled, so it cannot leak through a log line, a traceback with locals, a snapshot or
  a checkpoint by accident. ``reveal()`` is the one way to the value, used only where
  the value is handed to ccxt.
- Every loaded value is registered with the redactor. :func:`install` puts a log record
  factory in place that scrubs registered values from every message and traceback
  before any handler sees it, and an ``excepthook`` that does the same for crashes.
  :func:`redact` is for any other text that may carry an exchange's echo (error
  messages stored in the ledger, shown in the desk).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NoReturn
from urllib.parse import quote, quote_plus

ENV_KEY = "TRADEDESK_API_KEY"
ENV_SECRET = "TRADEDESK_API_SECRET"  # noqa: S105 - a variable name, not a secret
ENV_PASSWORD = "TRADEDESK_API_PASSWORD"  # noqa: S105 - OKX, KuCoin need a passphrase too

MASK = "***"
_MIN_LEN = 4  # shorter values would redact ordinary words; no real key is this short

_lock = threading.Lock()
_values: set[str] = set()


class Secret:
    """A string that does not show itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled or stored")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))


@dataclass(frozen=True, repr=False)
class Credentials:
    api_key: Secret
    secret: Secret
    password: Secret | None = None

    def __repr__(self) -> str:
        return f"Credentials(api_key={MASK}, secret={MASK}{', password=' + MASK if self.password else ''})"

    def ccxt_config(self) -> dict[str, str]:
        """The one place values leave their wrappers: straight into the ccxt constructor."""
        cfg = {"apiKey": self.api_key.reveal(), "secret": self.secret.reveal()}
        if self.password:
            cfg["password"] = self.password.reveal()
        return cfg


class MissingCredentials(RuntimeError):
    """Live trading needs keys in the environment."""


def load_credentials(env: Mapping[str, str] | None = None) -> Credentials:
    """Read the API key/secret from the environment (never from settings or files)."""
    env = os.environ if env is None else env
    key, secret = env.get(ENV_KEY, ""), env.get(ENV_SECRET, "")
    missing = [n for n, v in ((ENV_KEY, key), (ENV_SECRET, secret)) if not v.strip()]
    if missing:
        raise MissingCredentials(f"live trading needs {' and '.join(missing)} in the environment")
    pw = env.get(ENV_PASSWORD, "")
    return Credentials(Secret(key.strip()), Secret(secret.strip()), Secret(pw.strip()) if pw.strip() else None)


def register(value: str) -> None:
    """Treat ``value`` (and its URL-encoded forms) as secret from now on."""
    if value and len(value) >= _MIN_LEN:
        with _lock:
            _values.update({value, quote(value, safe=""), quote_plus(value)})


def register_env(env: Mapping[str, str] | None = None) -> None:
    """Register whatever the credential variables hold, before anything can log them."""
    env = os.environ if env is None else env
    for name in (ENV_KEY, ENV_SECRET, ENV_PASSWORD):
        v = env.get(name, "")
        if v.strip():
            register(v)
            register(v.strip())


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    if not _values or not text:
        return text
    with _lock:
        values = sorted(_values, key=len, reverse=True)  # longest first: encoded forms contain plain ones
    for v in values:
        if v in text:
            text = text.replace(v, MASK)
    return text


def redact_any(obj: Any) -> str:
    return redact(str(obj))


# ---------------------------------------------------------------------------- logging & crashes

_installed = False
_base_factory = logging.getLogRecordFactory()


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    if _values:
        _scrub(record)
    return record


def _scrub(record: logging.LogRecord) -> None:
    try:
        msg = record.getMessage()
    except Exception:  # a bad format string: keep the raw parts, still scrubbed
        msg = f"{record.msg} {record.args}"
    clean = redact(msg)
    if clean != msg or record.args:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[0] is not None:
        # Format the traceback now, scrubbed; handlers reuse exc_text instead of formatting again.
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactingFilter(logging.Filter):
    """The same scrubbing as a handler filter, for handlers that see foreign records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _values:
            _scrub(record)
        return True


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    sys.stderr.write(redact("".join(traceback.format_exception(kind, exc, tb))))


def install() -> None:
    """Register the environment's credentials and scrub them from logs and crashes."""
    global _installed
    register_env()
    if _installed:
        return
    _installed = True
    logging.setLogRecordFactory(_redacting_factory)
    for h in logging.getLogger().handlers:
        h.addFilter(RedactingFilter())
    sys.excepthook = _excepthook
    threading.excepthook = lambda a: _excepthook(a.exc_type, a.exc_value or Exception(), a.exc_traceback)
