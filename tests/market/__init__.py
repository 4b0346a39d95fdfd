"""Tests of market data: parsing, books, features, feeds, the fake exchange."""
