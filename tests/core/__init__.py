"""Tests of the engine's core: settings, secrets, the import layout."""
