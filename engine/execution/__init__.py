"""Execution: the order path, risk gate, executors (paper, live), positions, ledger."""
