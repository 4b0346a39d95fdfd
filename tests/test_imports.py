"""The headless core never imports textual (each module checked in a fresh interpreter)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import engine
import models

from .conftest import ROOT

HEADLESS = sorted(
    [m.name for m in pkgutil.walk_packages(engine.__path__, "engine.") if not m.name.rpartition(".")[2].startswith("_")]
    + [m.name for m in pkgutil.walk_packages(models.__path__, "models.") if not m.name.rpartition(".")[2].startswith("_")]
)


@pytest.mark.parametrize("module", ["engine", "models", *HEADLESS])
def test_headless_module_does_not_import_textual(module):
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith(('textual.', 'tui')));"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{module} imports {r.stdout.strip() or r.stderr[-500:]}"


def test_models_do_not_import_engine():
    code = (
        "import sys, pkgutil, importlib, models\n"
        "for m in pkgutil.walk_packages(models.__path__, 'models.'): importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m == 'engine' or m.startswith('engine.')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr[-500:]
