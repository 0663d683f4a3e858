"""The OpenAPI schema, its docs page, and a schemathesis run of the live API against it."""

from __future__ import annotations

import re
from typing import Any

import pytest
import schemathesis
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jobs.models import GenerationJob

ERROR_CODES = (
    "validation_error",
    "invalid_api_key",
    "api_key_revoked",
    "job_too_expensive",
    "daily_budget_exceeded",
    "parse_error",
    "idempotency_key_invalid",
    "idempotency_conflict",
    "unsupported_media_type",
    "queue_full",
    "not_found",
    "job_already_finished",
    "blocked",
    "rate_limited",
    "too_many_active_jobs",
    "daily_quota_exceeded",
    "webhook_url_forbidden",
    "too_many_streams",
    "last_event_id_invalid",
    "preview_not_found",
)


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)


def test_schema_is_valid_openapi_3(openapi: dict[str, Any]) -> None:
    validate_schema(openapi)

    assert openapi["openapi"].startswith("3.")


def test_schema_documents_every_endpoint_and_the_error_shape(openapi: dict[str, Any]) -> None:
    paths = openapi["paths"]

    assert set(paths) == {
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/cancel",
        "/api/v1/jobs/{job_id}/events",
        "/api/v1/jobs/{job_id}/preview",
    }
    submit = paths["/api/v1/jobs"]["post"]["responses"]
    assert set(submit) == {"200", "202", "400", "401", "403", "409", "415", "429", "503"}
    assert set(paths["/api/v1/jobs/{job_id}"]["get"]["responses"]) == {"200", "304", "401", "404", "429"}
    error = openapi["components"]["schemas"]["ErrorDetail"]["properties"]
    assert {"code", "message", "fields", "retry_after"} <= set(error)
    described = " ".join(
        response.get("description", "")
        for path in paths.values()
        for op in path.values()
        for response in op["responses"].values()
    )
    assert [code for code in ERROR_CODES if f"`{code}`" not in described] == []


def test_schema_declares_the_response_headers_clients_rely_on(openapi: dict[str, Any]) -> None:
    submit = openapi["paths"]["/api/v1/jobs"]["post"]["responses"]
    status = openapi["paths"]["/api/v1/jobs/{job_id}"]["get"]["responses"]

    declared = {
        (path, code): set(response.get("headers", {}))
        for path, responses in (("submit", submit), ("status", status))
        for code, response in responses.items()
        if response.get("headers")
    }

    assert declared == {
        ("submit", "200"): {"Location", "Preference-Applied"},
        ("submit", "202"): {"Location", "Preference-Applied"},
        ("submit", "429"): {"Retry-After"},
        ("submit", "503"): {"Retry-After"},
        ("status", "200"): {"ETag"},
        ("status", "304"): {"ETag"},
        ("status", "429"): {"Retry-After"},
    }
    assert submit["202"]["headers"]["Location"]["required"] is True


@pytest.mark.django_db
def test_schema_is_served_at_api_schema(client: Client) -> None:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert "/api/v1/jobs" in response.json()["paths"]


def test_docs_page_loads_swagger_ui_from_our_own_static_files(client: Client) -> None:
    page = client.get("/api/docs/")
    script = client.get("/api/docs/?script=")

    assert page.status_code == 200
    html = page.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle." in src for src in sources)
    assert all(src.startswith("/") for src in sources), sources
    assert all(client.get(src).status_code == 200 for src in sources)
    policy = csp(page["Content-Security-Policy"])
    assert (policy["style-src"], policy["script-src"]) == ("'self' 'unsafe-inline'", "'self'")
    assert script.status_code == 200
    assert "/api/schema/" in script.content.decode()


def test_relaxed_style_policy_stays_on_the_docs_page(client: Client) -> None:
    response = client.get("/api/v1/jobs/not-a-uuid")

    assert csp(response["Content-Security-Policy"])["style-src"] == "'self'"


def csp(header: str) -> dict[str, str]:
    return dict(directive.strip().split(" ", 1) for directive in header.split(";"))


CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def run_against_live_api(base_url: str, *, mode: GenerationMode, checks: list[Any]) -> None:
    """Generates requests for every operation of the live schema and checks each answer."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/schema/?format=json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 5

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        def answers(case: Any) -> None:
            # A webhook URL's host is resolved at submit: no DNS lookups leave a test run.
            if isinstance(case.body, dict):
                case.body.pop("webhook_url", None)
            case.call_and_validate(checks=checks)

        answers()


@pytest.fixture
def tiny_limits(settings: Any) -> None:
    """Generated jobs are committed and wake any real worker of the session: keep them tiny."""
    settings.JOB_LIMITS = {**settings.JOB_LIMITS, "min_size": 64, "max_size": 64, "max_steps": 2}
    settings.JOB_DEFAULTS = {**settings.JOB_DEFAULTS, "width": 64, "height": 64, "steps": 2}
    # A generated "Prefer: wait=N" answers at once rather than wait for a worker that may not run.
    settings.SUBMIT_WAIT_MAX_SECONDS = 0


@pytest.mark.usefixtures("tiny_limits")
@pytest.mark.django_db(transaction=True)
def test_live_api_answers_valid_requests_without_5xx_and_as_documented(live_server: Any) -> None:
    run_against_live_api(live_server.url, mode=GenerationMode.POSITIVE, checks=CONFORMANCE)

    # The run reached the service, not only the validation in front of it.
    assert GenerationJob.objects.exists()


@pytest.mark.usefixtures("tiny_limits")
@pytest.mark.django_db(transaction=True)
def test_live_api_answers_invalid_requests_without_5xx(live_server: Any) -> None:
    run_against_live_api(live_server.url, mode=GenerationMode.NEGATIVE, checks=[not_a_server_error])


def test_schema_documents_the_bearer_scheme_as_optional_and_the_job_cost(openapi: dict[str, Any]) -> None:
    assert openapi["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key, ig_<prefix>_<secret>; without one the caller is anonymous.",
    }
    submit = openapi["paths"]["/api/v1/jobs"]["post"]
    # Either a key or nothing: anonymous callers stay welcome.
    assert submit["security"] == [{"ApiKey": []}, {}]
    assert "cost_units" in openapi["components"]["schemas"]["Job"]["properties"]


def test_schema_documents_the_event_stream_its_event_types_and_resume(openapi: dict[str, Any]) -> None:
    events = openapi["paths"]["/api/v1/jobs/{job_id}/events"]["get"]

    assert set(events["responses"]["200"]["content"]) == {"text/event-stream"}
    assert set(events["responses"]) == {"200", "400", "404", "429"}
    assert {parameter["name"] for parameter in events["parameters"]} == {"job_id", "Last-Event-ID"}
    assert all(
        f"`{name}`" in events["description"]
        for name in ("queued", "progress", "completed", "failed", "cancelled")
    )


def test_schema_documents_prefer_wait_on_submit_and_the_preview(openapi: dict[str, Any]) -> None:
    submit = openapi["paths"]["/api/v1/jobs"]["post"]
    preview = openapi["paths"]["/api/v1/jobs/{job_id}/preview"]["get"]["responses"]

    (prefer,) = [parameter for parameter in submit["parameters"] if parameter["name"] == "Prefer"]
    assert prefer["in"] == "header"
    assert "wait=N" in prefer["description"]
    assert set(preview["200"]["content"]) == {"image/webp", "image/jpeg"}
    assert set(preview) == {"200", "304", "404"}
