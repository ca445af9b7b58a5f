"""Renderers: they read findings and compute nothing a JSON reader would not also get."""
