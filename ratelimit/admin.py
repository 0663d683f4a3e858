"""Operators' abuse control in the Django admin: the blocklist, API keys and the usage page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST

from config.admin import ReadOnlyModelAdmin
from core.errors import ApplicationError
from ratelimit import services
from ratelimit.models import ApiKey, BlockedNetwork, ClientUsage
from ratelimit.selectors import usage_of_account, usage_period_start, usage_top_networks

USAGE_PERIODS = {"today": "Today", "week": "Last 7 days"}


@admin.register(BlockedNetwork)
class BlockedNetworkAdmin(admin.ModelAdmin):
    list_display = ("network", "reason", "created_at")
    search_fields = ("network", "reason")


API_KEY_POLICY_FIELDS = ("submit_rate", "max_active_jobs", "daily_budget_units", "max_job_units", "weight")
# Shown, never edited: they change only through ratelimit.services.
API_KEY_RECORD_FIELDS = (
    "prefix",
    "created_at",
    "rotated_at",
    "webhook_secret_rotated_at",
    "previous_webhook_secret_until",
    "revoked_at",
    "last_used_at",
    "usage_this_week",
)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are made, rotated and revoked through ratelimit.services; the plain key is shown
    once, in a message, and never stored."""

    list_display = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "prefix")
    fields = ("name", *API_KEY_POLICY_FIELDS, *API_KEY_RECORD_FIELDS)
    readonly_fields = API_KEY_RECORD_FIELDS
    actions = ("rotate_keys", "rotate_webhook_secrets", "revoke_keys")

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Revoke instead: the key's jobs and usage keep pointing at it.
        return False

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        issued = services.api_key_create(
            name=obj.name, **{name: getattr(obj, name) for name in API_KEY_POLICY_FIELDS}
        )
        obj.pk = issued.api_key.pk
        obj.refresh_from_db()
        messages.warning(
            request,
            f"The key {obj.name!r}, shown only this once: {issued.key} — "
            f"and its webhook signing secret: {issued.webhook_secret}",
        )

    @admin.display(description="Usage, last 7 days")
    def usage_this_week(self, obj: ApiKey) -> str:
        if obj.pk is None:
            return "—"
        usage = usage_of_account(account=obj.account, since=usage_period_start(period="week"))
        failures = ", ".join(f"{code} {count}" for code, count in usage.failures.items()) or "none"
        return (
            f"{usage.submitted} jobs, {usage.completed} completed, {usage.cost_units:.2f} compute units, "
            f"{usage.gpu_seconds:.1f} GPU seconds; failures: {failures}; refused: {usage.refused}"
        )

    @admin.action(description="Rotate the selected keys (new secrets, shown once)")
    def rotate_keys(self, request: HttpRequest, queryset: Any) -> None:
        for api_key in queryset:
            plain = services.api_key_rotate(api_key=api_key)
            messages.warning(request, f"The new key of {api_key.name!r}, shown only this once: {plain}")

    @admin.action(description="Rotate the selected keys' webhook secrets (the old ones sign for the overlap)")
    def rotate_webhook_secrets(self, request: HttpRequest, queryset: Any) -> None:
        for api_key in queryset:
            secret = services.api_key_rotate_webhook_secret(api_key=api_key)
            messages.warning(
                request, f"The new webhook secret of {api_key.name!r}, shown only this once: {secret}"
            )

    @admin.action(description="Revoke the selected keys")
    def revoke_keys(self, request: HttpRequest, queryset: Any) -> None:
        for api_key in queryset:
            services.api_key_revoke(api_key=api_key)
        messages.success(request, f"Revoked {queryset.count()} key(s).")


@admin.register(ClientUsage)
class ClientUsageAdmin(ReadOnlyModelAdmin):
    """The usage page replaces the row list: top client networks, with block and unblock."""

    def get_urls(self) -> list[URLPattern]:
        return [
            path("block/", self.admin_site.admin_view(self.block_view), name="ratelimit_clientusage_block"),
            path(
                "unblock/",
                self.admin_site.admin_view(self.unblock_view),
                name="ratelimit_clientusage_unblock",
            ),
            *super().get_urls(),  # type: ignore[list-item]
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        period = request.GET.get("period", "today")
        if period not in USAGE_PERIODS:
            period = "today"
        since = usage_period_start(period="week" if period == "week" else "today")
        context = {
            **self.admin_site.each_context(request),
            "title": "Usage per network or API key",
            "opts": self.model._meta,
            "periods": USAGE_PERIODS,
            "period": period,
            "since": since,
            "tables": [
                ("Most jobs", usage_top_networks(since=since, order_by="submitted")),
                ("Most GPU seconds", usage_top_networks(since=since, order_by="gpu_seconds")),
                ("Most compute units", usage_top_networks(since=since, order_by="cost_units")),
                ("Most refused requests", usage_top_networks(since=since, order_by="refused")),
            ],
            "can_block": request.user.has_perm("ratelimit.add_blockednetwork"),
            "can_unblock": request.user.has_perm("ratelimit.delete_blockednetwork"),
        }
        return TemplateResponse(request, "admin/ratelimit/usage.html", context)

    @staticmethod
    def _back_to_usage(request: HttpRequest) -> HttpResponseRedirect:
        period = request.POST.get("period", "today")
        return HttpResponseRedirect(f"{reverse('admin:ratelimit_clientusage_changelist')}?period={period}")

    @staticmethod
    def _require(request: HttpRequest, permission: str) -> None:
        if not request.user.has_perm(permission):
            raise PermissionDenied

    @method_decorator(require_POST)
    def block_view(self, request: HttpRequest) -> HttpResponse:
        self._require(request, "ratelimit.add_blockednetwork")
        network = request.POST.get("network", "")
        try:
            services.block_ip(ip_or_cidr=network, reason=f"Blocked from the usage page by {request.user}")
        except ApplicationError as error:
            messages.error(request, error.message)
        else:
            messages.success(request, f"Blocked {network}.")
        return self._back_to_usage(request)

    @method_decorator(require_POST)
    def unblock_view(self, request: HttpRequest) -> HttpResponse:
        self._require(request, "ratelimit.delete_blockednetwork")
        network = request.POST.get("network", "")
        try:
            services.unblock_ip(ip_or_cidr=network)
        except ApplicationError as error:
            messages.error(request, error.message)
        else:
            messages.success(request, f"Unblocked {network}.")
        return self._back_to_usage(request)
