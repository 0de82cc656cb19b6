"""Runnable examples; importable from the repository's root (``examples.billing``)."""
