"""The engine's core: the engine itself, events, bus, clock, snapshot, settings, secrets."""
