"""Seed 002's customer onboarding: a stand-in billing service and the activities that
call it.  Start the service with ``python -m examples.billing.service`` and register the
activities with ``ActivityRegistry.from_import_paths(["examples.billing.activities"])``.
"""
