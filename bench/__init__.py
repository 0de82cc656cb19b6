"""Side-by-side benchmarks: Legato against DBOS and the Temporal dev server.

Run ``python -m bench`` (see docs/performance.md). This package imports nothing outside
the standard library at import time, so ``python -m bench`` can install the ``bench``
extra before it needs it.
"""
