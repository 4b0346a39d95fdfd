"""The one way tests make settings."""

from __future__ import annotations

from pathlib import Path

from engine.core import settings
from engine.core.settings import Settings


def settings_for(data_dir: Path, *overrides: str) -> Settings:
    """Built-in defaults (no settings file is read), the data directory in ``data_dir``
    (so nothing touches the user's), then ``overrides`` as ``--set`` would apply them."""
    return settings.load(search=False, overrides=[f'general.data_dir="{data_dir}"', *overrides])
