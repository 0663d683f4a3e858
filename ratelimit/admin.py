"""Operators' abuse control in the Django admin: the blocklist and the per-IP usage page."""

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
from ratelimit.models import BlockedNetwork, ClientUsage
from ratelimit.selectors import usage_period_start, usage_top_networks

USAGE_PERIODS = {"today": "Today", "week": "Last 7 days"}


@admin.register(BlockedNetwork)
class BlockedNetworkAdmin(admin.ModelAdmin):
    list_display = ("network", "reason", "created_at")
    search_fields = ("network", "reason")


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
            "title": "Usage per IP",
            "opts": self.model._meta,
            "periods": USAGE_PERIODS,
            "period": period,
            "since": since,
            "tables": [
                ("Most jobs", usage_top_networks(since=since, order_by="submitted")),
                ("Most GPU seconds", usage_top_networks(since=since, order_by="gpu_seconds")),
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
