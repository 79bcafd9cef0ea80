"""The API against its own ``/openapi.json``, by Schemathesis: requests to every operation (an admin's),
first a few known to reach its success paths, then generated ones, valid and not, each answer checked
for a server error and against the schema's statuses, media types and bodies. Tenants point at a port
nothing listens on, so a rollout fails at once, never hangs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from schemathesis.python.asgi import shutdown_lifespans

from orchestrator.api.app import create_app
from tests.integration.test_api import UNREACHABLE, api_tokens, bearer
from tests.support.harness import Harness

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
GENERATED = 20
"""Generated requests per operation, valid and invalid ones: enough to find a 500 or an undocumented
answer in a few seconds (runs of 200 found nothing more)."""

ROLLOUT = {"rollout_id": 1}
KNOWN: dict[str, list[tuple[dict[str, Any], int | None]]] = {
    # (the case, the status it must get, or None: whatever the schema allows)
    "GET /api/v1/tenants": [
        ({"query": {"tag": ["blue"], "limit": 1}}, 200),
        ({"query": {"tenant": ["t0"]}}, 200),
    ],
    "POST /api/v1/tenants": [
        ({"body": {"id": "t2", "url": UNREACHABLE, "schema": "s2", "tags": ["x"], "group": "west"}}, 201)
    ],
    "POST /api/v1/tenants/import": [
        ({"body": [{"id": "t3", "url": UNREACHABLE}], "media_type": "application/json"}, 200),
        ({"body": [{"id": "t4", "url": UNREACHABLE}], "media_type": "text/yaml"}, 200),  # sent as YAML
        ({"body": f"id,url\nt5,{UNREACHABLE}\n", "media_type": "text/csv"}, 200),
    ],
    "GET /api/v1/tenants/{tenant_id}": [({"path_parameters": {"tenant_id": "t0"}}, 200)],
    "PATCH /api/v1/tenants/{tenant_id}": [
        ({"path_parameters": {"tenant_id": "t2"}, "body": {"tags": ["y"], "schema": None}}, 200)
    ],
    "POST /api/v1/tenants/{tenant_id}/disable": [({"path_parameters": {"tenant_id": "t2"}}, 200)],
    "POST /api/v1/tenants/{tenant_id}/enable": [({"path_parameters": {"tenant_id": "t2"}}, 200)],
    "DELETE /api/v1/tenants/{tenant_id}": [({"path_parameters": {"tenant_id": "t5"}}, 204)],
    "GET /api/v1/tenants/{tenant_id}/runs": [({"path_parameters": {"tenant_id": "t0"}}, 200)],
    "POST /api/v1/rollouts": [
        ({"body": {"command": "upgrade", "revision": "head", "dry_run": True}}, 200),
        (
            {"body": {"command": "upgrade", "revision": "head", "tags": ["blue"], "max_failure_rate": "50%"}},
            202,
        ),
    ],
    "GET /api/v1/rollouts": [({"query": {"limit": 1}}, 200)],
    "GET /api/v1/rollouts/{rollout_id}": [
        ({"path_parameters": ROLLOUT}, 200),
        ({"path_parameters": ROLLOUT, "query": {"attempts": True, "tracebacks": True, "limit": 1}}, 200),
    ],
    "POST /api/v1/rollouts/{rollout_id}/cancel": [({"path_parameters": ROLLOUT}, None)],
    "POST /api/v1/rollouts/{rollout_id}/retry": [({"path_parameters": ROLLOUT}, None)],
    "POST /api/v1/rollouts/{rollout_id}/resume": [({"path_parameters": ROLLOUT}, None)],
    "POST /api/v1/audits": [({"body": {"tags": ["blue"]}}, 201)],
    "GET /api/v1/audits/{audit_id}": [({"path_parameters": {"audit_id": 1}}, 200)],
}


@pytest.fixture
def schema(harness: Harness) -> Iterator[Any]:
    h = harness
    h.register("t0", UNREACHABLE, tags=("blue",), group="east")
    h.register("t1", UNREACHABLE, tags=("green",))
    cfg = h.settings(api_tokens=api_tokens(), connect_timeout=0.5, poll_interval=0.1, parallelism=2)
    app = create_app(cfg, h.env())
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app, headers=bearer("viewer"))
    yield loaded.exclude(path_regex="/events$")  # a stream that lasts as long as its rollout
    shutdown_lifespans()  # the app's lifespan, which Schemathesis started: closes the store and the pool


def test_every_answer_conforms_to_the_openapi_schema(schema: Any) -> None:
    failures: dict[str, str] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for case, status in KNOWN.pop(operation.label, []):
            try:
                response = operation.Case(**case).call_and_validate(headers=bearer("admin"), checks=CHECKS)
            except FailureGroup as exc:
                failures[f"{operation.label} {case}"] = str(exc)
                continue
            assert status is None or response.status_code == status, (operation.label, case, response.text)

        both = st.one_of(operation.as_strategy(), operation.as_strategy(GenerationMode.NEGATIVE))

        @hypothesis.given(case=both)
        @hypothesis.settings(
            max_examples=GENERATED,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],  # a failure is reported as found, not shrunk
            suppress_health_check=list(HealthCheck),
        )
        def generated(case: Any) -> None:
            case.call_and_validate(headers=bearer("admin"), checks=CHECKS)

        try:
            generated()
        except (Exception, FailureGroup) as exc:  # each operation's first failure, not only the first's
            failures[operation.label] = str(exc)
    assert not KNOWN, f"operations no longer in the schema: {sorted(KNOWN)}"
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
