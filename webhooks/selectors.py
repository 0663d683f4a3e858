"""Reads of webhook deliveries for the sweep: which ones are overdue, what the broker holds."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings

from config.celery import queue_pending_messages
from ops.metrics import GaugeReading
from webhooks.models import DeliveryStatus, WebhookDelivery


def overdue_deliveries(*, due_before: datetime, limit: int) -> list[tuple[int, int]]:
    """``(id, attempt_count)`` of at most ``limit`` pending deliveries whose next attempt was due
    before ``due_before``, most overdue first (index ``webhook_status_next_idx``)."""
    if limit <= 0:
        return []
    overdue = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lt=due_before)
    return list(overdue.order_by("next_attempt_at").values_list("pk", "attempt_count")[:limit])


def webhook_queue_pending_messages() -> int:
    """Attempt messages waiting in the broker's webhooks queue (not the ones workers have taken)."""
    return queue_pending_messages(queue=settings.WEBHOOK_QUEUE)


def backlog_gauges() -> list[GaugeReading]:
    """Deliveries still pending, for /metrics (one range of ``webhook_status_created_idx``)."""
    pending = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING).count()
    return [
        GaugeReading(
            "imagegen_webhook_backlog",
            "Webhook deliveries not yet delivered or given up: queued, scheduled or in flight.",
            (),
            {(): pending},
        )
    ]
