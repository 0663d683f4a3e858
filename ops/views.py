"""Probe and scrape endpoints: /healthz (alive), /readyz (parts reachable), /metrics."""

from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from core.errors import error_body
from ops.health import readiness
from ops.metrics import job_registry


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    checks = readiness()
    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        return JsonResponse({"status": "unavailable", "failing": failing, "checks": checks}, status=503)
    return JsonResponse({"status": "ready", "checks": checks})


def _process_registry() -> CollectorRegistry:
    # gunicorn runs several processes; with PROMETHEUS_MULTIPROC_DIR set they share their
    # request metrics through files there, so any one of them can answer a scrape.
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if not token and not settings.DEBUG:
        return JsonResponse(
            error_body(code="metrics_token_unset", message="Set METRICS_TOKEN to scrape metrics."), status=403
        )
    if token and not secrets.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
        return JsonResponse(
            error_body(code="not_authenticated", message="Send Authorization: Bearer <METRICS_TOKEN>."),
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    body = generate_latest(_process_registry()) + generate_latest(job_registry)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
