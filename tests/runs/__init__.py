"""Tests of the runs: replay, record/replay, samples."""
