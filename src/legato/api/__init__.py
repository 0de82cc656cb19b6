"""Legato's REST API (FastAPI): ``create_app(settings)``; ``legato serve`` runs it.

Install the ``server`` extra (``pip install legato[server]``).  See
docs/reference/api.md for the routes, authentication and errors.
"""

from legato.api.app import create_app, open_engine
from legato.api.auth import Principal, TokenVerifier

__all__ = ["Principal", "TokenVerifier", "create_app", "open_engine"]
