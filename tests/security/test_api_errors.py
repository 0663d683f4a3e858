"""Every /api/ error, unexpected ones included, is the JSON error shape with the request's id,
which the response's X-Request-ID and the request's log lines carry too. DEBUG is off here,
as in production (scripts/test.sh)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from django.http import HttpRequest, HttpResponse
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

import jobs.services
from core.logging import LogfmtFormatter
from webhooks import addresses

pytestmark = pytest.mark.django_db

JOB = {"prompt": "a paper boat", "width": 64, "height": 64, "steps": 2}


def assert_error_shape(response: HttpResponse, *, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response["X-Request-ID"]
    return dict(error)


@pytest.fixture
def log_lines(caplog: pytest.LogCaptureFixture) -> Callable[[], str]:
    """The log as production writes it (logfmt), each line formatted while its request ran."""
    caplog.handler.setFormatter(LogfmtFormatter())
    caplog.set_level(logging.INFO)
    return lambda: caplog.text


def test_a_service_that_raises_answers_a_json_500_whose_request_id_is_in_the_log(
    client: Client, monkeypatch: pytest.MonkeyPatch, log_lines: Callable[[], str]
) -> None:
    def explode(**kwargs: Any) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(jobs.services, "job_submit", explode)

    response = client.post("/api/v1/jobs", JOB, content_type="application/json")

    error = assert_error_shape(response, status=500, code="internal_error")
    assert "secret internal detail" not in response.content.decode()
    (line,) = [line for line in log_lines().splitlines() if "event=api_unhandled_error" in line]
    assert f"request_id={error['request_id']}" in line
    assert "secret internal detail" in log_lines()


class ExplodingMiddleware:
    """Raises inside the middleware stack, outside any view."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        raise RuntimeError("middleware broke")


def test_a_middleware_that_raises_answers_a_json_500_whose_request_id_is_in_the_log(
    settings: Any, log_lines: Callable[[], str]
) -> None:
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, f"{__name__}.ExplodingMiddleware"]

    response = Client(raise_request_exception=False).get(f"/api/v1/jobs/{uuid.uuid4()}")

    error = assert_error_shape(response, status=500, code="internal_error")
    assert "middleware broke" not in response.content.decode()
    errors = [line for line in log_lines().splitlines() if "level=ERROR" in line]
    assert errors and all(f"request_id={error['request_id']}" in line for line in errors)


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("get", "/api/v1/nothing-here", 404, "not_found"),
        ("get", "/api/", 404, "not_found"),
        ("post", "/api/v1/jobs/", 404, "not_found"),
        ("delete", "/api/v1/jobs", 405, "method_not_allowed"),
        ("put", f"/api/v1/jobs/{uuid.uuid4()}", 405, "method_not_allowed"),
        ("get", f"/api/v1/jobs/{uuid.uuid4()}/cancel", 405, "method_not_allowed"),
        ("get", "/api/v1/jobs/not-a-uuid", 404, "not_found"),
        ("get", "/api/v1/jobs/%00%ff", 404, "not_found"),
        ("post", "/api/v1/jobs/12345/cancel", 404, "not_found"),
    ],
)
def test_unknown_paths_wrong_methods_and_odd_ids_answer_the_error_shape(
    client: Client, method: str, path: str, status: int, code: str
) -> None:
    response = getattr(client, method)(path)

    assert_error_shape(response, status=status, code=code)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b'{"prompt": "a boat",', "application/json", 400, "parse_error"),
        (b"\xff\xfe\x00{not utf-8", "application/json", 400, "parse_error"),
        ('{"prompt": "caf\u00e9"}'.encode("latin-1"), "application/json", 400, "parse_error"),
        (b"[1, 2, 3]", "application/json", 400, "validation_error"),
        (b'"just a string"', "application/json", 400, "validation_error"),
        (b"null", "application/json", 400, "validation_error"),
        (b'{"prompt": "a boat", "width": 1e999}', "application/json", 400, "validation_error"),
        (
            b'{"prompt": "a boat", "seed": 99999999999999999999999999}',
            "application/json",
            400,
            "validation_error",
        ),
        (b'{"prompt": {"nested": true}}', "application/json", 400, "validation_error"),
        (b'{"prompt": "a boat"}', "text/plain", 415, "unsupported_media_type"),
        (b"prompt=a+boat", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b"prompt=a+boat", "application/json", 400, "parse_error"),
        (b'{"prompt": "a boat"}', "multipart/form-data; boundary=x", 415, "unsupported_media_type"),
        (b'{"prompt": "a boat"}', "application/json; charset=utf-16", 400, "parse_error"),
        (b'{"prompt": "a\\u0000boat"}', "application/json", 400, "validation_error"),
    ],
)
def test_malformed_bodies_and_content_type_lies_answer_the_error_shape(
    client: Client, body: bytes, content_type: str, status: int, code: str
) -> None:
    response = client.generic("POST", "/api/v1/jobs", body, content_type=content_type)

    assert_error_shape(response, status=status, code=code)


def test_a_huge_body_is_refused_before_it_is_read(client: Client, settings: Any) -> None:
    body = b'{"prompt": "' + b"a" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1) + b'"}'

    response = client.generic("POST", "/api/v1/jobs", body, content_type="application/json")

    assert_error_shape(response, status=413, code="request_too_large")


@pytest.mark.parametrize(
    "key", ["tab\there", "new\nline", "nul\x00", "bell\x07", "é-not-ascii", "x" * 256, ""]
)
def test_an_idempotency_key_with_control_or_odd_characters_is_a_400(client: Client, key: str) -> None:
    response = client.post("/api/v1/jobs", JOB, content_type="application/json", HTTP_IDEMPOTENCY_KEY=key)

    assert_error_shape(response, status=400, code="idempotency_key_invalid")


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated webhook URLs resolve to a public address without any lookup leaving the test."""
    monkeypatch.setattr(addresses, "system_resolver", lambda host, port: ["93.184.215.14"])


@pytest.mark.usefixtures("no_dns")
@given(
    key=st.text(max_size=300),
    etag=st.text(max_size=200),
    webhook_url=st.text(max_size=100) | st.from_regex(r"https?://[^/]{0,80}/?.{0,20}", fullmatch=True),
)
@hypothesis_settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
def test_odd_headers_and_webhook_urls_never_give_a_5xx(key: str, etag: str, webhook_url: str) -> None:
    client = Client()
    submitted = client.post(
        "/api/v1/jobs",
        {**JOB, "webhook_url": webhook_url},
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY=key,
    )
    polled = client.get(f"/api/v1/jobs/{uuid.uuid4()}", HTTP_IF_NONE_MATCH=etag)

    assert submitted.status_code < 500 and polled.status_code < 500
    assert submitted.status_code < 400 or "error" in submitted.json()
    assert polled.json()["error"]["code"] == "not_found"


@pytest.mark.usefixtures("no_dns")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_submit_endpoint_fuzzed_with_webhook_urls_never_gives_a_5xx(
    live_server: Any, settings: Any, mode: GenerationMode
) -> None:
    # Generated jobs are committed and wake any real worker of the session: keep them tiny.
    settings.JOB_LIMITS = {**settings.JOB_LIMITS, "min_size": 64, "max_size": 64, "max_steps": 2}
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/?format=json")
    submit = schema["/api/v1/jobs"]["POST"]

    @given(case=submit.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    def answers(case: Any) -> None:
        case.call_and_validate(checks=[not_a_server_error])

    answers()


def test_a_trusted_proxy_names_the_request_and_others_cannot(client: Client, settings: Any) -> None:
    settings.CLIENT_IP_TRUSTED_PROXIES = ["127.0.0.0/8"]
    from_proxy = client.get("/api/v1/jobs/x", HTTP_X_REQUEST_ID="trace-7f3a:01")
    forged_line = client.get("/api/v1/jobs/x", HTTP_X_REQUEST_ID="a b\nevent=forged")
    too_long = client.get("/api/v1/jobs/x", HTTP_X_REQUEST_ID="a" * 129)
    settings.CLIENT_IP_TRUSTED_PROXIES = []
    from_anyone = client.get("/api/v1/jobs/x", HTTP_X_REQUEST_ID="trace-7f3a:01")

    assert from_proxy["X-Request-ID"] == from_proxy.json()["error"]["request_id"] == "trace-7f3a:01"
    for response in (forged_line, too_long, from_anyone):
        assert response["X-Request-ID"] != "trace-7f3a:01"
        assert len(response["X-Request-ID"]) == 32


def test_pages_outside_the_api_keep_their_own_error_pages(client: Client) -> None:
    response = client.get("/no-such-page")

    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")
    assert response["X-Request-ID"]
