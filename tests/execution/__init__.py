"""Tests of execution: paper fills, positions, the risk gate, the ledger, live orders."""
