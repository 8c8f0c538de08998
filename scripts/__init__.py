"""Maintenance scripts (tokenizer conversion, model training); not part of the package."""
