"""Property-based tests from the OpenAPI description (schemathesis): for every operation,
generated valid and invalid requests, authenticated with the dev token, never get a 5xx,
and every answer matches what /openapi.json documents (status, content type, schema).

Bounded: 30 examples per operation and mode, no shrinking; about two seconds per operation.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from legato.api import create_app
from legato.settings import Settings

EXAMPLES = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def exercise(
    operation: schemathesis.APIOperation,
    mode: schemathesis.GenerationMode,
    headers: dict[str, str],
) -> None:
    """Run EXAMPLES generated requests of one operation and mode through the checks."""
    checks = [*CHECKS, negative_data_rejection] if mode.is_negative else CHECKS

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call(headers=headers)
        case.validate_response(response, checks=checks)

    run()


@pytest.mark.timeout(300)  # 35 operations at about two seconds each, on a busy machine
def test_generated_requests_get_no_server_error_and_documented_answers(
    tmp_path: Path, migrated_db: Path
) -> None:
    shutil.copyfile(migrated_db, tmp_path / "legato.db")
    app = create_app(Settings(db=str(tmp_path / "legato.db"), api_dev=True, poll_interval=0.05))
    headers = {"Authorization": f"Bearer {app.state.dev_token}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 16
    impossible: list[str] = []
    try:
        for operation in operations:
            for mode in (
                schemathesis.GenerationMode.POSITIVE,
                schemathesis.GenerationMode.NEGATIVE,
            ):
                try:
                    exercise(operation, mode, headers)
                except Unsatisfiable:
                    # nothing of this operation can be made invalid (GET /health, say)
                    assert mode.is_negative, operation.label
                    impossible.append(operation.label)
    finally:
        schemathesis.python.asgi.shutdown_lifespans()
    # every route with a parameter or a body got invalid requests too
    assert set(impossible) <= {"GET /health", "GET /ready"}, impossible
