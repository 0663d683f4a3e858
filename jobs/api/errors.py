"""One JSON error shape for the whole API: ``{"error": {"code", "message", ...}}``, and the one
mapping of error codes to HTTP statuses, which the web page uses too."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import ApplicationError, error_body

# Every other code is the client's to fix: 400.
_CODES_BY_STATUS = {
    403: ("blocked", "csrf_failed"),
    404: ("not_found", "preview_not_found"),
    409: ("job_already_finished", "job_not_retryable", "idempotency_conflict"),
    401: ("invalid_api_key", "api_key_revoked"),
    429: (
        "rate_limited",
        "too_many_active_jobs",
        "daily_quota_exceeded",
        "daily_budget_exceeded",
        "too_many_streams",
    ),
    503: ("queue_full",),
}
_STATUS_BY_CODE = {code: status for status, codes in _CODES_BY_STATUS.items() for code in codes}


def http_status(error: ApplicationError) -> int:
    return _STATUS_BY_CODE.get(error.code, 400)


def _field_errors(detail: Any) -> dict[str, list[dict[str, str]]]:
    if isinstance(detail, dict):
        return {name: _flat_errors(errors) for name, errors in detail.items()}
    return {"non_field_errors": _flat_errors(detail)}


def _flat_errors(detail: Any) -> list[dict[str, str]]:
    """The errors of one field, however DRF nested them (a list field keys them by index)."""
    if isinstance(detail, dict):
        return [error for nested in detail.values() for error in _flat_errors(nested)]
    if isinstance(detail, list):
        return [error for nested in detail for error in _flat_errors(nested)]
    return [{"code": str(getattr(detail, "code", "invalid")), "message": str(detail)}]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        body = error_body(code=exc.code, message=exc.message, **exc.extra)
        if exc.fields:
            body["error"]["fields"] = {
                name: [{"code": e.code, "message": e.message} for e in errors]
                for name, errors in exc.fields.items()
            }
        headers = {}
        if exc.retry_after is not None:
            body["error"]["retry_after"] = exc.retry_after
            headers["Retry-After"] = str(exc.retry_after)
        return Response(body, status=http_status(exc), headers=headers)
    if isinstance(exc, exceptions.ValidationError):
        return Response(
            error_body(
                code="validation_error",
                message="Some parameters are invalid.",
                fields=_field_errors(exc.detail),
            ),
            status=status.HTTP_400_BAD_REQUEST,
        )
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        response.data = error_body(code=codes if isinstance(codes, str) else "error", message=str(exc.detail))
    return response
