"""Routers of the triggers: ``events`` (CloudEvents in) and ``webhooks`` (signed
deliveries in).  Mount them with ``app.include_router(events.router)`` and
``app.include_router(webhooks.router)``."""
