"""Strict settings: a corpus of bad files, all refused with the key named."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from decimal import Decimal

import pytest

from engine.core import settings
from engine.core.settings import SettingsError
from tests.conftest import ROOT


def full_file(**changes: str) -> str:
    """settings.toml with ``section.key`` lines replaced (value text) or removed (None)."""
    lines = (ROOT / "settings.toml").read_text().splitlines()
    section = ""
    out = []
    for line in lines:
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#"):
            key = f"{section}.{line.split('=', 1)[0].strip()}"
            if key in changes:
                if changes[key] is None:
                    continue
                line = f"{line.split('=', 1)[0]}= {changes[key]}"
        out.append(line)
    return "\n".join(out) + "\n"


def test_repository_settings_file_matches_schema():
    assert (ROOT / "settings.toml").read_text() == settings.render_toml(), (
        "settings.toml is out of step with engine/core/settings.py: run `python -m engine.core.settings > settings.toml`"
    )
    cfg = settings.load(ROOT / "settings.toml")
    assert cfg.as_dict() == settings.load(search=False).as_dict()


def test_every_key_is_documented():
    text = (ROOT / "settings.toml").read_text()
    doc = tomllib.loads(text)
    for section, keys in settings.SCHEMA.items():
        for key, spec in keys.items():
            assert key in doc[section]
            assert spec.doc and f"# {spec.doc}" in text


BAD = [
    ("paper.taker_fee", '"abc"', "paper.taker_fee"),
    ("paper.taker_fee", '"-0.1"', "paper.taker_fee"),
    ("paper.taker_fee", '"NaN"', "paper.taker_fee"),
    ("paper.taker_fee", '"1e999"', "paper.taker_fee"),
    ("paper.starting_balance", '"0"', "paper.starting_balance"),
    ("ui.refresh_hz", "nan", "ui.refresh_hz"),
    ("ui.refresh_hz", "inf", "ui.refresh_hz"),
    ("ui.refresh_hz", "1e999", "ui.refresh_hz"),
    ("ui.refresh_hz", "50", "ui.refresh_hz"),
    ("ui.refresh_hz", '"fast"', "ui.refresh_hz"),
    ("bars.close_grace_ms", "-1", "bars.close_grace_ms"),
    ("bars.close_grace_ms", "1.5", "bars.close_grace_ms"),
    ("general.seed", "true", "general.seed"),
    ("paper.allow_short", '"yes"', "paper.allow_short"),
    ("paper.allow_short", "1", "paper.allow_short"),
    ("general.log_level", '"LOUD"', "general.log_level"),
    ("models.enabled", '"cnn"', "models.enabled"),
    ("models.enabled", "[1, 2]", "models.enabled"),
    ("risk.max_order_notional", '"-5"', "risk.max_order_notional"),
    ("fusion.open_threshold", "2", "fusion.open_threshold"),
    ("keys.sell", '"b"', "keys.sell"),  # bound twice
    ("general.data_dir", None, "general.data_dir"),  # missing
]


@pytest.mark.parametrize(("key", "value", "named"), BAD)
def test_bad_setting_refused_naming_key(tmp_path, key, value, named):
    path = tmp_path / "bad.toml"
    path.write_text(full_file(**{key: value}))
    with pytest.raises(SettingsError) as err:
        settings.load(path)
    assert named in str(err.value)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[general]\nsurprise = 1\n", "general.surprise"),
        ("[nonsense]\na = 1\n", "[nonsense]"),
        ("[exchange]\napi_secret = \"x\"\n", "environment"),
        ("this is not toml", "not valid TOML"),
        ("general = 5\n", "[general] must be a table"),
    ],
)
def test_structural_errors(tmp_path, text, named):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=named.replace("[", r"\[").replace("]", r"\]")):
        settings.load(path)


def test_bad_config_corpus_all_rejected(tmp_path):
    """The RELIABILITY figure: bad configs rejected / corpus = 1."""
    rejected = 0
    for i, (key, value, _) in enumerate(BAD):
        path = tmp_path / f"bad{i}.toml"
        path.write_text(full_file(**{key: value}))
        try:
            settings.load(path)
        except SettingsError:
            rejected += 1
    print(f"settings: bad configs rejected / corpus = {rejected}/{len(BAD)}")
    assert rejected == len(BAD)


def test_overrides():
    cfg = settings.load(search=False, overrides=["paper.taker_fee=0.0005", "symbols.primary=SOL/USDT",
                                                  "ui.refresh_hz=8", "paper.allow_short=false"])
    assert cfg.paper.taker_fee == Decimal("0.0005")
    assert cfg.symbols.primary == "SOL/USDT"
    assert cfg.ui.refresh_hz == 8.0
    assert cfg.paper.allow_short is False
    for bad in ["paper.taker_fee=nan", "nosuch.key=1", "paper", "ui.refresh_hz=0"]:
        with pytest.raises(SettingsError):
            settings.load(search=False, overrides=[bad])


def test_cli_refuses_bad_settings_at_start(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(full_file(**{"paper.taker_fee": "nan"}))
    r = subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(path), "replay", "x.gz", "--headless"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "paper.taker_fee" in r.stderr
    r = subprocess.run([sys.executable, "-m", "tui.cli", "--set", "ui.refresh_hz=inf", "replay", "x.gz", "--headless"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "ui.refresh_hz" in r.stderr
