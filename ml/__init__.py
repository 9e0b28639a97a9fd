"""Tandem's provider-neutral model lifecycle."""

__version__ = "0.1.0"
