"""``Authorization: Bearer <key>`` for the API. No header is an anonymous caller; a header
that names no live key is 401, never anonymous."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from core.errors import ApplicationError
from ratelimit.callers import Caller, anonymous_caller, api_key_caller
from ratelimit.client_ip import client_ip
from ratelimit.models import ApiKey
from ratelimit.services import api_key_authenticate


def request_caller(request: Request) -> Caller:
    """The caller of an API request: its API key's, or anonymous at its client IP."""
    return _caller(client_ip(request), request.auth if isinstance(request.auth, ApiKey) else None)


def bearer_caller(request: HttpRequest) -> Caller:
    """The caller of a request outside DRF (the OpenAI-compatible face), authenticated as the
    API does: ``AuthenticationFailed`` for a header that names no live key. Reads the database."""
    authenticated = ApiKeyAuthentication().authenticate(request)
    return _caller(client_ip(request), authenticated[1] if authenticated else None)


def _caller(ip: str, api_key: ApiKey | None) -> Caller:
    return anonymous_caller(ip) if api_key is None else api_key_caller(api_key, client_ip=ip)


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request | HttpRequest) -> tuple[None, ApiKey] | None:
        header = request.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, plain = header.partition(" ")
        if scheme.lower() != "bearer" or not plain.strip():
            raise exceptions.AuthenticationFailed(
                "Send the key as 'Authorization: Bearer ig_...'.", code="invalid_api_key"
            )
        try:
            return None, api_key_authenticate(plain=plain.strip())
        except ApplicationError as error:
            raise exceptions.AuthenticationFailed(error.message, code=error.code) from None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = ApiKeyAuthentication
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key, ig_<prefix>_<secret>; without one the caller is anonymous.",
        }
