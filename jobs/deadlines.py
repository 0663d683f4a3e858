"""A job's deadline: the ``Cancel-After`` header (a Go duration, as Replicate takes it) or the
``deadline_seconds`` body field, bounded by ``JOB_DEADLINE_MAX_SECONDS``."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from django.conf import settings

from core.errors import FieldError, invalid_parameters
from jobs.errors import cancel_after_invalid

DEADLINE_MIN_SECONDS = 1
# Go's time.ParseDuration units, in seconds.
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
# For the OpenAPI schema: the same grammar a client can check before sending.
CANCEL_AFTER_PATTERN = rf"^{_DURATION.pattern}$"


def cancel_after_seconds(header: str) -> float:
    """Seconds of a ``Cancel-After`` value such as ``90s``, ``5m`` or ``1m30s``; a
    ``cancel_after_invalid`` ApplicationError for anything else or out of range."""
    value = header.strip()
    if len(value) > 64 or not _DURATION.fullmatch(value):
        raise cancel_after_invalid(header, DEADLINE_MIN_SECONDS, settings.JOB_DEADLINE_MAX_SECONDS)
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(value))
    if not DEADLINE_MIN_SECONDS <= seconds <= settings.JOB_DEADLINE_MAX_SECONDS:
        raise cancel_after_invalid(header, DEADLINE_MIN_SECONDS, settings.JOB_DEADLINE_MAX_SECONDS)
    return seconds


def deadline_at(*, now: datetime, cancel_after: str | None, deadline_seconds: int | None) -> datetime | None:
    """When the job must be finished by: the earlier of the header's and the body's, or None."""
    limits = []
    if cancel_after is not None:
        limits.append(cancel_after_seconds(cancel_after))
    if deadline_seconds is not None:
        if not DEADLINE_MIN_SECONDS <= deadline_seconds <= settings.JOB_DEADLINE_MAX_SECONDS:
            message = f"Use {DEADLINE_MIN_SECONDS} to {settings.JOB_DEADLINE_MAX_SECONDS} seconds."
            raise invalid_parameters(
                {"deadline_seconds": [FieldError(code="deadline_out_of_range", message=message)]}
            )
        limits.append(float(deadline_seconds))
    return now + timedelta(seconds=min(limits)) if limits else None
