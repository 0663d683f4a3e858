"""Webhook deliveries: one row per logical notification, one row per HTTP attempt at it."""

from __future__ import annotations

from django.db import models


class WebhookEvent(models.TextChoices):
    QUEUED = "queued", "Queued"
    STARTED = "started", "Started"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # an attempt is queued, scheduled or in flight
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"  # retries exhausted, 410 Gone, or a forbidden address


class AttemptError(models.TextChoices):
    HTTP_STATUS = "http_status", "Non-2xx answer"
    REDIRECT = "redirect", "Redirect (not followed)"
    GONE = "gone", "410 Gone"
    FORBIDDEN_ADDRESS = "forbidden_address", "Forbidden address"
    DNS_ERROR = "dns_error", "Name did not resolve"
    CONNECTION_ERROR = "connection_error", "Connection error"
    TIMEOUT = "timeout", "Timed out"


class WebhookDelivery(models.Model):
    """One event of one job for its webhook URL; every retry keeps ``webhook_id`` and ``payload``."""

    job = models.ForeignKey("jobs.GenerationJob", on_delete=models.CASCADE, related_name="webhook_deliveries")
    event = models.CharField(max_length=16, choices=WebhookEvent.choices)
    webhook_id = models.CharField(max_length=64, unique=True)
    url = models.CharField(max_length=2048)
    payload = models.TextField(help_text="The exact JSON body that is signed and sent.")
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempt_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the next attempt is due; while one is in flight, when its claim lapses.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at",)
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["status", "created_at"], name="webhook_status_created_idx"),
            models.Index(fields=["event", "created_at"], name="webhook_event_created_idx"),
            # The sweep's query: pending deliveries, most overdue first.
            models.Index(fields=["status", "next_attempt_at"], name="webhook_status_next_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=DeliveryStatus.values), name="webhook_delivery_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.webhook_id} job.{self.event} [{self.status}]"


class WebhookAttempt(models.Model):
    """One HTTP request of a delivery, kept for operators whatever its outcome."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    succeeded = models.BooleanField()
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=32, choices=AttemptError.choices, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    worker_hostname = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ("delivery", "number")
        indexes = [models.Index(fields=["succeeded", "started_at"], name="webhook_attempt_outcome_idx")]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_unique_number"),
        ]

    def __str__(self) -> str:
        return f"{self.delivery.webhook_id} #{self.number}"
