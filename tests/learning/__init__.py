"""Tests of learning: the brain, fusion, offline pre-training."""
