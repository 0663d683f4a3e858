"""The jobs app's settings check (see core.checks)."""

from __future__ import annotations

from django.conf import settings


def jobs_settings_problems() -> list[str]:
    if settings.WORKER_HEARTBEAT_SECONDS <= 0:
        return ["WORKER_HEARTBEAT_SECONDS must be positive"]
    # After a Redis restart live workers need up to one interval to beat again; give them two.
    if 0 < settings.REAPER_HEARTBEAT_GRACE_SECONDS < 2 * settings.WORKER_HEARTBEAT_SECONDS:
        return ["REAPER_HEARTBEAT_GRACE_SECONDS must be 0 (off) or at least twice WORKER_HEARTBEAT_SECONDS"]
    return []
