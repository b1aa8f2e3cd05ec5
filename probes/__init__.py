"""Analyzers: turn captured activations into findings (never edit a model)."""
