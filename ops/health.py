"""Readiness: can this process reach what a request needs (database, Redis, result storage)?"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import redis
from django.conf import settings
from django.core.files.storage import FileSystemStorage, storages
from django.db import connection
from storages.backends.s3 import S3Storage

from config.logging import log_event

logger = logging.getLogger(__name__)

# A probe must answer within its own timeout (often 1-5 s), even when a part hangs.
REDIS_TIMEOUT_SECONDS = 2.0


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_redis() -> None:
    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
    finally:
        client.close()


def check_storage() -> None:
    storage = storages["default"]
    if isinstance(storage, S3Storage):
        # HEAD on the bucket proves endpoint, credentials and bucket in one request.
        storage.connection.meta.client.head_bucket(Bucket=storage.bucket_name)
    elif isinstance(storage, FileSystemStorage):
        # FileSystemStorage creates the folder on first save; the probe asks whether it could.
        Path(storage.location).mkdir(parents=True, exist_ok=True)
        probe = Path(storage.location) / ".readyz"
        probe.touch()
        probe.unlink()


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "redis": check_redis,
    "storage": check_storage,
}


def readiness() -> dict[str, str]:
    """Each part's state, ``ok`` or the error's class name (details go to the log only)."""
    states = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as error:
            log_event(logger, "not_ready", part=name, error=f"{type(error).__name__}: {error}")
            states[name] = type(error).__name__
        else:
            states[name] = "ok"
    return states
