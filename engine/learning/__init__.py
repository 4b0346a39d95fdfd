"""Learning: the models in the engine, decisions, and learning from closed positions."""
