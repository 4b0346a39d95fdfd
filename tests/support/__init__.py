"""Test support: fake ccxt, the live-test kit, a scripted market, workers, the scorecard."""
