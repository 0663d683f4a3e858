"""A job's latest preview picture in Redis, with a TTL: it may be lost, and is never kept in the
database or the result storage. Stored as bytes, read back with its step and an ETag."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.conf import settings

from core.redis import binary_redis_client
from jobs.services.transition import JobId


@dataclass(frozen=True)
class Preview:
    step: int
    image: bytes
    content_type: str

    @property
    def etag(self) -> str:
        return f'"{hashlib.sha256(self.image).hexdigest()[:32]}"'


def preview_key(job_id: JobId) -> str:
    return f"jobs:preview:{job_id}"


def preview_store(*, job_id: JobId, step: int, image: bytes, content_type: str) -> None:
    pipeline = binary_redis_client().pipeline(transaction=True)
    pipeline.hset(preview_key(job_id), mapping={"step": step, "image": image, "content_type": content_type})
    pipeline.expire(preview_key(job_id), settings.PREVIEW_TTL_SECONDS)
    pipeline.execute()


def preview_get(*, job_id: JobId) -> Preview | None:
    stored: dict[bytes, bytes] = binary_redis_client().hgetall(preview_key(job_id))  # type: ignore[assignment]
    if not stored:
        return None
    return Preview(
        step=int(stored[b"step"]), image=stored[b"image"], content_type=stored[b"content_type"].decode()
    )
