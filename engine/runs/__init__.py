"""Runs: the drivers and reports of each mode (live, replay, headless, backtest, bench)."""
