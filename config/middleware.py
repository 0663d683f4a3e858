"""Project-wide middleware: a request id on every request, and the JSON error shape for every
error under ``/api/``, including the ones Django answers itself (404, 405, 500, 413)."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from core.errors import error_body
from core.logging import current_request_id, log_event
from ratelimit.client_ip import sent_by_trusted_proxy

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
# What a proxy's id may look like: a UUID, a hex trace id, or similar; nothing that could forge a log field.
_WELL_FORMED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
API_PREFIX = "/api/"
# The codes for errors Django or the server answer before the API's own handler sees them.
_CODES_BY_STATUS = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
}
_MESSAGES_BY_CODE = {
    "bad_request": "The request could not be read.",
    "not_authenticated": "Authentication is required.",
    "forbidden": "This request is not allowed.",
    "not_found": "Nothing is at this address.",
    "method_not_allowed": "This method is not allowed here.",
    "request_too_large": "The request body is too large.",
    "internal_error": "Something went wrong on our side; quote the request id when reporting it.",
}

Handler = Callable[[HttpRequest], HttpResponse]


class RequestIdMiddleware:
    """Names each request by its proxy's ``X-Request-ID`` when a trusted proxy sent a
    well-formed one, else by a new UUID; the response and every log line of the request carry it."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = self._request_id(request)
        # For Django's own log line of a 5xx, written after this middleware returned.
        request.request_id = request_id  # type: ignore[attr-defined]
        token = current_request_id.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            current_request_id.reset(token)
        response[REQUEST_ID_HEADER] = request_id
        return response

    @staticmethod
    def _request_id(request: HttpRequest) -> str:
        proposed = request.headers.get(REQUEST_ID_HEADER, "")
        if proposed and _WELL_FORMED_REQUEST_ID.fullmatch(proposed) and sent_by_trusted_proxy(request):
            return proposed
        return uuid.uuid4().hex


def api_error_response(*, status: int, code: str | None = None) -> JsonResponse:
    code = code or _CODES_BY_STATUS.get(status, "internal_error" if status >= 500 else "bad_request")
    return JsonResponse(error_body(code=code, message=_MESSAGES_BY_CODE[code]), status=status)


class ApiErrorMiddleware:
    """Under ``/api/``, turns an unhandled exception into a logged JSON 500, and any error page
    that is not JSON (Django's 404, 405, 413, or a 500 from a middleware) into the error shape."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        declared_length = request.META.get("CONTENT_LENGTH") or "0"
        if not declared_length.isdigit():
            return api_error_response(status=400)
        # DRF's parsers read the stream without Django's size limit.
        if int(declared_length) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            return api_error_response(status=413)
        response = self.get_response(request)
        if response.status_code >= 400 and not _is_json(response):
            return api_error_response(status=response.status_code)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not request.path.startswith(API_PREFIX):
            return None
        log_event(logger.exception, "api_unhandled_error", method=request.method, path=request.path)
        return api_error_response(status=500, code="internal_error")


def _is_json(response: HttpResponse) -> bool:
    if not response.get("Content-Type", "").startswith("application/json"):
        return False
    try:
        body = json.loads(response.content) if not response.streaming else None
    except ValueError:
        return False
    return isinstance(body, dict) and "error" in body
