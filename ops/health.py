"""Readiness: can this process reach what a request needs (database, Redis, result storage)?"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path

from django.core.files.storage import FileSystemStorage, storages
from django.db import connection
from storages.backends.s3 import S3Storage

from core.logging import log_event
from core.redis import redis_client

logger = logging.getLogger(__name__)


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_redis() -> None:
    # A probe must answer within its own timeout (often 1-5 s): the client's timeouts see to it.
    redis_client().ping()


def check_storage() -> None:
    storage = storages["default"]
    if isinstance(storage, S3Storage):
        # HEAD on the bucket proves endpoint, credentials and bucket in one request.
        storage.connection.meta.client.head_bucket(Bucket=storage.bucket_name)
    elif isinstance(storage, FileSystemStorage):
        # FileSystemStorage creates the folder on first save; the probe asks whether it could.
        Path(storage.location).mkdir(parents=True, exist_ok=True)
        # A name of its own per probe: concurrent probes sharing one name raced to unlink it.
        probe = Path(storage.location) / f".readyz-{uuid.uuid4().hex}"
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
            log_event(logger.info, "not_ready", part=name, error=f"{type(error).__name__}: {error}")
            states[name] = type(error).__name__
        else:
            states[name] = "ok"
    return states
