"""Desk widgets by area: header, charts, sparklines, logs, models, positions."""
