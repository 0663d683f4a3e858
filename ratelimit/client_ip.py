"""Decides the client IP of a request, once, for the whole project."""

from __future__ import annotations

from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    """The peer address. ``X-Forwarded-For`` is ignored until trusted proxies are configured."""
    return str(request.META.get("REMOTE_ADDR") or "0.0.0.0")
