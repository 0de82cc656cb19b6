"""Legato: a durable workflow engine for business processes."""

__version__ = "0.1.0"
