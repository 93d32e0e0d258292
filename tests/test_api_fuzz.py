"""Schema-driven fuzzing of the whole API (schemathesis): no 500s, no response outside its schema."""
from __future__ import annotations

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from app import create_app
from tests.utils.service import wait_ready

EXAMPLES_PER_OPERATION = 30
KEY = "fuzz-key-1"


def test_no_server_errors_and_responses_match_the_schema(api_settings, trained_service):
    """With API keys on, as in production: schemathesis also checks that bad keys are refused."""
    app = create_app(api_settings.model_copy(update={"api_keys": [f"{KEY}:admin"]}), factory=lambda s: trained_service)
    with TestClient(app) as client:
        wait_ready(client)
        _fuzz(schemathesis.openapi.from_asgi("/openapi.json", app))


def _fuzz(schema) -> None:
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/recommend", "/health", "/customers/{customer_id}", "/products",
                                                "/fairness", "/model"}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def call_and_validate(case):
            case.call_and_validate(headers={"X-API-Key": KEY})

        call_and_validate()
