"""Operators' view of webhook deliveries and their attempts (read-only), with a re-send action."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from config.admin import ReadOnlyModelAdmin
from webhooks.models import WebhookAttempt, WebhookDelivery
from webhooks.services import webhook_delivery_resend

ATTEMPT_COLUMNS = ("number", "started_at", "duration_ms", "succeeded", "response_status", "error")


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = readonly_fields = (*ATTEMPT_COLUMNS, "error_message", "worker_hostname")

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyModelAdmin):
    list_display = (
        "webhook_id",
        "job",
        "event",
        "status",
        "attempt_count",
        "next_attempt_at",
        "url",
        "created_at",
    )
    list_filter = ("status", "event")
    search_fields = ("webhook_id", "url", "job__id")
    inlines = (WebhookAttemptInline,)
    actions = ("resend",)

    # Re-sending is an action, not an edit, so it is allowed on this read-only model.
    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff

    @admin.action(description="Re-send (a new attempt with the same webhook-id)", permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        for delivery in queryset:
            webhook_delivery_resend(delivery_id=delivery.pk)
        self.message_user(request, f"{queryset.count()} deliveries queued again.", messages.SUCCESS)


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(ReadOnlyModelAdmin):
    list_display = ("delivery", *ATTEMPT_COLUMNS)
    list_filter = ("succeeded", "error")
    search_fields = ("delivery__webhook_id",)
