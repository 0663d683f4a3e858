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
from schemathesis.checks import CHECKS
from schemathesis.generation import GenerationMode

from generator.parameters import SCHEDULER_NAMES
from jobs.models import GenerationJob
from jobs.validation import job_limits
from ratelimit.services import api_key_create
from webhooks.models import WebhookEvent

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
    "cancel_after_invalid",
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
        "/api/v1/models",
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


# Every check schemathesis has, stateless and stateful alike.
ALL_CHECKS = CHECKS.get_all()
EXAMPLES_PER_OPERATION = 25


def without_unspeakable_fields(case: Any) -> None:
    """Drops the two inputs whose acceptance depends on more than a schema can say:
    ``webhook_url``'s host is resolved at submit (no DNS lookups leave a test run, and a
    private or unresolvable host is refused), and ``Cancel-After``'s range (1 second to
    ``JOB_DEADLINE_MAX_SECONDS``) is no pattern's to express; both have tests of their own."""
    if isinstance(case.body, dict):
        case.body.pop("webhook_url", None)
    if case.headers:
        case.headers.pop("Cancel-After", None)


def run_against_live_api(base_url: str, *, headers: dict[str, str]) -> None:
    """Generates valid and invalid requests for every operation of the live schema, then
    submit -> status/cancel sequences through the schema's links, checking every answer with
    every check."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/schema/?format=json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 6

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and operation.label == "GET /api/v1/models":
                continue  # it takes no input: there is nothing to make invalid

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def answers(case: Any) -> None:
                without_unspeakable_fields(case)
                case.call_and_validate(headers=headers, checks=ALL_CHECKS)

            answers()

    # The live face (a job's event stream and preview) answers by time as much as by state: a
    # stream ends when it will, a preview comes and goes, so hypothesis could not replay a
    # sequence through it. The stateless runs above cover both; tests/jobs/live reads them
    # with a real SSE client.
    sequences = schema.exclude(path_regex=r"/(events|preview)$")

    class Workflow(sequences.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            without_unspeakable_fields(case)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": headers}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=ALL_CHECKS, headers=headers, transport_kwargs=kwargs)

    Workflow.run(
        settings=settings(
            max_examples=EXAMPLES_PER_OPERATION,
            stateful_step_count=4,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )


@pytest.fixture
def tiny_limits(settings: Any, unserved_model: str) -> None:
    """Generated jobs are committed, for a model no worker of the session runs (so a job's
    answers do not change under the run, which hypothesis needs to replay it); keep them tiny."""
    settings.JOB_LIMITS = {**settings.JOB_LIMITS, "min_size": 64, "max_size": 64, "max_steps": 2}
    settings.JOB_DEFAULTS = {**settings.JOB_DEFAULTS, "width": 64, "height": 64, "steps": 2}
    # A generated "Prefer: wait=N" answers at once, and a job's event stream ends soon, rather
    # than wait for a worker that may not run.
    settings.SUBMIT_WAIT_MAX_SECONDS = 0
    settings.EVENTS_KEEPALIVE_SECONDS = 0.2
    settings.EVENTS_MAX_STREAM_SECONDS = 1


@pytest.mark.usefixtures("tiny_limits")
@pytest.mark.django_db(transaction=True)
def test_a_strict_stateful_run_without_a_key_finds_nothing(live_server: Any) -> None:
    run_against_live_api(live_server.url, headers={})

    # The run reached the service, not only the validation in front of it.
    assert GenerationJob.objects.filter(api_key__isnull=True).exists()
    assert GenerationJob.objects.filter(status="cancelled").exists()


@pytest.mark.usefixtures("tiny_limits")
@pytest.mark.django_db(transaction=True)
def test_a_strict_stateful_run_with_a_key_finds_nothing(live_server: Any) -> None:
    # A key whose own limits never refuse, as the anonymous limits are relaxed for every test.
    issued = api_key_create(
        name="schemathesis", max_active_jobs=0, daily_budget_units=0, submit_rate="1000/m"
    )

    run_against_live_api(live_server.url, headers={"Authorization": f"Bearer {issued.key}"})

    assert GenerationJob.objects.filter(api_key=issued.api_key).exists()


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


def test_schema_declares_every_limit_the_server_enforces_from_its_own_rules(
    settings: Any,
) -> None:
    settings.JOB_LIMITS = {**settings.JOB_LIMITS, "max_size": 256, "max_steps": 10, "prompt_max_chars": 300}
    body = SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]
    submit = body["JobSubmitInputRequest"]["properties"]

    for name, (low, high) in job_limits().ranges().items():
        assert (submit[name]["minimum"], submit[name]["maximum"]) == (low, high), name
    assert submit["width"]["maximum"] == 256
    assert submit["width"]["multipleOf"] == submit["height"]["multipleOf"] == 8
    assert (submit["prompt"]["minLength"], submit["prompt"]["maxLength"]) == (1, 300)
    assert not re.search(submit["prompt"]["pattern"], "   ")
    assert set(submit["scheduler"]["enum"]) == set(SCHEDULER_NAMES)
    assert set(submit["webhook_events"]["items"]["enum"]) == set(WebhookEvent.values)
    assert submit["deadline_seconds"]["maximum"] == settings.JOB_DEADLINE_MAX_SECONDS


def test_schema_links_a_submit_to_the_jobs_status_and_cancel(openapi: dict[str, Any]) -> None:
    links = openapi["paths"]["/api/v1/jobs"]["post"]["responses"]["202"]["links"]

    assert {name: link["operationId"] for name, link in links.items()} == {
        "status": "jobs_status",
        "cancel": "jobs_cancel",
    }
    assert all(link["parameters"] == {"job_id": "$response.body#/id"} for link in links.values())


@pytest.mark.django_db
def test_a_prompt_of_only_whitespace_or_a_number_is_refused_as_the_schema_says(api_client: Any) -> None:
    for body in ({"prompt": ""}, {"prompt": " \t"}, {"prompt": 12}, {"prompt": "a fox", "width": "512"}):
        response = api_client.post("/api/v1/jobs", body, format="json")
        assert response.status_code == 400, body
    assert not GenerationJob.objects.exists()


def test_schema_documents_the_event_stream_its_event_types_and_resume(openapi: dict[str, Any]) -> None:
    events = openapi["paths"]["/api/v1/jobs/{job_id}/events"]["get"]

    assert set(events["responses"]["200"]["content"]) == {"text/event-stream"}
    assert set(events["responses"]) == {"200", "400", "401", "404", "429"}
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
