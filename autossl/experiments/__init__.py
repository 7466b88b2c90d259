"""Experiments built from the library's parts: the first-run demo and the views study."""
