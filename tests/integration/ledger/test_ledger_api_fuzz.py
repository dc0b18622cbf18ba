"""Schemathesis against the ledger API's OpenAPI document, in process: no input gives a 500."""

from __future__ import annotations

import psycopg
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from meterline.store.db import Database
from tests.integration.ledger.apikit import build_world


def test_no_input_makes_the_api_fail(conn: psycopg.Connection, db: Database) -> None:
    world = build_world(conn, db)
    schema = schemathesis.openapi.from_asgi("/openapi.json", world.app, headers=world.h("all"))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    seen: dict[str, set[int]] = {}
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"

        @settings(max_examples=40, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(), real=st.sampled_from([None, *world.codes]))
        def fuzz(case: schemathesis.Case, real: str | None) -> None:
            if real is not None:  # aim some cases at accounts that exist, to reach past the lookups
                if case.path_parameters and "account_code" in case.path_parameters:
                    case.path_parameters = {**case.path_parameters, "account_code": real}
                if isinstance(case.body, dict) and "account_code" in case.body:
                    case.body = {**case.body, "account_code": real}
            response = case.call(headers=world.h("all"))
            seen.setdefault(label, set()).add(response.status_code)
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

        fuzz()
    # the fuzzing reached the handlers, not only the validation layer
    reached = {label for label, codes in seen.items() if 200 in codes}
    assert {"GET /v1/accounts/{account_code}", "POST /v1/bank/query", "POST /v1/bank/payments",
            "POST /v1/counter/payments"} <= reached, seen
    assert all(all(code < 500 for code in codes) for codes in seen.values()), seen
