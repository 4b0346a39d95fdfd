"""Screens: the desk and its modal dialogs."""
