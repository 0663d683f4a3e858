"""Celery task of the webhooks app; routed to the light ``webhooks`` queue, never ``gpu``."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from webhooks import services


@shared_task(
    name="webhooks.tasks.deliver_webhook_task",
    bind=True,
    soft_time_limit=services.ATTEMPT_SOFT_TIME_LIMIT,
    time_limit=services.ATTEMPT_TIME_LIMIT,
)
def deliver_webhook_task(self: Any, *, delivery_id: int, attempt: int) -> None:
    services.webhook_delivery_attempt(
        delivery_id=delivery_id, attempt=attempt, worker_hostname=self.request.hostname or ""
    )
