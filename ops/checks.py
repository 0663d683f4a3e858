"""The ops app's deployment check: production scrapes of /metrics need a token."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks


def metrics_token_check(**kwargs: Any) -> list[checks.CheckMessage]:
    if settings.DEBUG or settings.METRICS_TOKEN:
        return []
    return [
        checks.Warning(
            "METRICS_TOKEN is not set: /metrics refuses every scrape outside DEBUG.",
            hint="Set METRICS_TOKEN and scrape with 'Authorization: Bearer <token>'.",
            id="ops.W001",
        )
    ]
