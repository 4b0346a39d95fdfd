"""The multi-timeframe CNN: network, perfect-move labels, agent."""
