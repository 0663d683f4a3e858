"""Celery tasks of the webhooks app: deliveries on the light ``webhooks`` queue, beat's sweep on
``maintenance``; never ``gpu``."""

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


@shared_task(name="webhooks.tasks.sweep_webhook_deliveries_task")
def sweep_webhook_deliveries_task() -> None:
    """Beat's periodic sweep: attempt messages that were never sent or that the broker lost."""
    services.webhook_deliveries_sweep()
