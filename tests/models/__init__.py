"""Tests of the models: networks, training, checkpoints, labels, inference bench."""
