"""Operators' console in the Django admin: the job list, a read-only job page, actions that
go through jobs.services, and the queue dashboard (numbers from jobs.selectors)."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from config.admin import ReadOnlyModelAdmin
from core.errors import ApplicationError
from jobs import selectors, services
from jobs.models import ACTIVE_STATUSES, GenerationJob, JobImage, JobStatus
from ratelimit import services as ratelimit_services

THUMBNAIL_PIXELS = 256
PROMPT_EXCERPT_CHARS = 60


class RecentWorkerFilter(admin.SimpleListFilter):
    title = "worker"
    parameter_name = "worker"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        # Workers seen lately only: a DISTINCT over all history is a full scan at a million rows.
        return [(hostname, hostname) for hostname in selectors.recent_worker_hostnames()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[GenerationJob]) -> QuerySet[GenerationJob]:
        return queryset.filter(worker_hostname=self.value()) if self.value() else queryset


# The dashboard's last-hour charts: small inline SVGs, no script and no external asset.
CHART_WIDTH, CHART_HEIGHT, CHART_GAP = 240, 60, 2
FAILURE_COLOURS = ("#ba2121", "#e68a00", "#8e44ad", "#2c3e50", "#16a085", "#7f8c8d")


@dataclass(frozen=True)
class ChartBar:
    x: int
    y: float
    width: int
    height: float
    value: int
    until: str  # the bucket's end, HH:MM UTC
    colour: str
    series: str


def _bars(
    values: list[int],
    *,
    until: list[str],
    peak: int,
    series: str,
    colour: str,
    below: list[int] | None = None,
) -> list[ChartBar]:
    """One bar per bucket scaled to ``peak``; ``below`` stacks them on earlier series."""
    width = CHART_WIDTH // len(values)
    scale = CHART_HEIGHT / max(peak, 1)
    bars = []
    for index, value in enumerate(values):
        base = (below[index] if below else 0) * scale
        bars.append(
            ChartBar(
                x=index * width,
                y=round(CHART_HEIGHT - base - value * scale, 2),
                width=width - CHART_GAP,
                height=round(value * scale, 2),
                value=value,
                until=until[index],
                colour=colour,
                series=series,
            )
        )
    return bars


def history_charts(history: selectors.QueueHistory) -> list[dict[str, Any]]:
    """The three charts of the last hour: completed jobs, queue depth, failures by code."""
    until = [end.strftime("%H:%M") for end in history.bucket_ends]
    failed_total = [sum(column) for column in zip(*history.failures.values(), strict=True)] or [0] * len(
        until
    )
    colours = dict(zip(history.failures, itertools.cycle(FAILURE_COLOURS), strict=False))
    failure_bars: list[ChartBar] = []
    stacked = [0] * len(until)
    for code, values in history.failures.items():
        failure_bars += _bars(
            values, until=until, peak=max(failed_total), series=code, colour=colours[code], below=stacked
        )
        stacked = [low + value for low, value in zip(stacked, values, strict=True)]
    return [
        _one_series_chart(
            "chart-completed", "Completed per 5 min", history.completed, until, "completed", "#417690"
        ),
        _one_series_chart(
            "chart-queue-depth", "Queue depth", history.queue_depth, until, "queued", "#79aec8"
        ),
        {
            "id": "chart-failures",
            "title": "Failed per 5 min, by code",
            "peak": max(failed_total),
            "bars": failure_bars,
            "legend": list(colours.items()),
        },
    ]


def _one_series_chart(
    chart_id: str, title: str, values: list[int], until: list[str], series: str, colour: str
) -> dict[str, Any]:
    peak = max(values)
    return {
        "id": chart_id,
        "title": title,
        "peak": peak,
        "bars": _bars(values, until=until, peak=peak, series=series, colour=colour),
    }


def _seconds(delta: timedelta | None) -> str:
    return f"{delta.total_seconds():.1f} s" if delta is not None else "-"


@admin.register(GenerationJob)
class GenerationJobAdmin(ReadOnlyModelAdmin):
    list_display = (
        "id",
        "thumbnail",
        "status",
        "failure_code",
        "client_ip",
        "prompt_excerpt",
        "size",
        "steps",
        "created_at",
        "run_time",
        "worker_hostname",
    )
    list_filter = ("status", "failure_code", ("created_at", admin.DateFieldListFilter), RecentWorkerFilter)
    search_fields = ("prompt",)  # shows the box; the matching is selectors.jobs_matching
    search_help_text = "A job id, a client IP, or words of the prompt."
    # Counting the whole table again on every filtered page is the slow query at scale.
    show_full_result_count = False
    list_per_page = 50
    actions = ("cancel_selected", "retry_selected", "block_clients")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "status",
                    "failure_code",
                    "failure_message",
                    "warnings",
                    "retry_of",
                    "retries",
                )
            },
        ),
        ("Result", {"fields": ("thumbnails", "results_deleted_at")}),
        (
            "Parameters",
            {
                "fields": (
                    "prompt",
                    "negative_prompt",
                    "size",
                    "steps",
                    "guidance_scale",
                    "seed",
                    "scheduler",
                    "num_images",
                    "model",
                )
            },
        ),
        (
            "Client and worker",
            {"fields": ("client_ip", "client_network", "worker_hostname", "requeue_count")},
        ),
        (
            "Timings",
            {"fields": ("created_at", "started_at", "finished_at", "wait_time", "run_time", "progress")},
        ),
    )
    readonly_fields = ("size", "thumbnails", "retries", "wait_time", "run_time", "progress")

    # History is read-only (see ReadOnlyModelAdmin): the actions below are the only way an
    # operator changes a job.

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Who may cancel and retry: staff granted "change" on jobs (and superusers)."""
        return request.user.has_perm("jobs.change_generationjob")

    def has_block_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("ratelimit.add_blockednetwork")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[GenerationJob], search_term: str
    ) -> tuple[QuerySet[GenerationJob], bool]:
        return selectors.jobs_matching(queryset=queryset, term=search_term), False

    def get_urls(self) -> list[URLPattern]:
        dashboard = path(
            "dashboard/", self.admin_site.admin_view(self.dashboard_view), name="jobs_generationjob_dashboard"
        )
        thumbnail = path(
            "<uuid:job_id>/thumbnail/",
            self.admin_site.admin_view(self.thumbnail_view),
            name="jobs_generationjob_thumbnail",
        )
        return [dashboard, thumbnail, *super().get_urls()]

    def thumbnail_view(self, request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
        """The first image of a job as a small PNG, made on first request (the list asks lazily)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        image = JobImage.objects.filter(job_id=job_id, index=0).first()
        if image is None:
            raise Http404("This job has no image.")
        response = HttpResponse(services.image_thumbnail(image=image), content_type="image/png")
        response["Cache-Control"] = "private, max-age=86400"
        return response

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """The queue dashboard; HTMX asks it again for the numbers alone every few seconds."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Queue dashboard",
            "opts": self.opts,
            "stats": selectors.queue_dashboard(),
            "charts": history_charts(selectors.queue_history()),
            "chart_size": (CHART_WIDTH, CHART_HEIGHT),
            "workers": selectors.live_workers(timeout=settings.DASHBOARD_PING_TIMEOUT_SECONDS),
            "changelist_url": reverse("admin:jobs_generationjob_changelist"),
        }
        is_htmx = bool(getattr(request, "htmx", False))  # set by django_htmx's middleware
        template = "admin/jobs/dashboard_numbers.html" if is_htmx else "admin/jobs/dashboard.html"
        return TemplateResponse(request, template, context)

    @admin.display(description="prompt")
    def prompt_excerpt(self, job: GenerationJob) -> str:
        if len(job.prompt) <= PROMPT_EXCERPT_CHARS:
            return job.prompt
        return job.prompt[: PROMPT_EXCERPT_CHARS - 1] + "…"

    @admin.display(description="size")
    def size(self, job: GenerationJob) -> str:
        return f"{job.width} x {job.height}"

    @admin.display(description="run time")
    def run_time(self, job: GenerationJob) -> str:
        return _seconds(job.finished_at - job.started_at if job.started_at and job.finished_at else None)

    @admin.display(description="wait time")
    def wait_time(self, job: GenerationJob) -> str:
        return _seconds(job.started_at - job.created_at if job.started_at else None)

    @admin.display(description="progress")
    def progress(self, job: GenerationJob) -> str:
        return f"{job.progress_step} / {job.progress_total}"

    @admin.display(description="")
    def thumbnail(self, job: GenerationJob) -> SafeString | str:
        # From the row alone, no query: only completed jobs whose results are kept have images.
        if job.status != JobStatus.COMPLETED or job.results_deleted_at is not None:
            return ""
        return format_html(
            '<img src="{}" loading="lazy" width="{}" alt="">',
            reverse("admin:jobs_generationjob_thumbnail", args=[job.pk]),
            services.THUMBNAIL_PIXELS // 2,
        )

    @admin.display(description="images")
    def thumbnails(self, job: GenerationJob) -> SafeString | str:
        images = list(job.images.all())
        if not images:
            return "-"
        width = min(job.width, THUMBNAIL_PIXELS)
        return format_html_join(
            " ",
            '<a href="{}"><img src="{}" width="{}" alt="image {} (seed {})"></a>',
            ((image.file.url, image.file.url, width, image.index, image.seed) for image in images),
        )

    @admin.display(description="retried as")
    def retries(self, job: GenerationJob) -> SafeString | str:
        retries = list(job.retries.values_list("pk", flat=True))
        if not retries:
            return "-"
        return format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            ((reverse("admin:jobs_generationjob_change", args=[pk]), pk) for pk in retries),
        )

    @admin.action(description="Cancel selected queued or running jobs", permissions=["operate"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[GenerationJob]) -> None:
        cancelled = 0
        for job_id in queryset.filter(status__in=ACTIVE_STATUSES).values_list("pk", flat=True):
            try:
                services.job_cancel(job_id=job_id)
            except ApplicationError:
                continue  # it finished between the list and the click
            cancelled += 1
        self._report(request, done=cancelled, verb="Cancelled", selected=queryset.count())

    @admin.action(
        description="Retry selected failed jobs (same parameters and seed)", permissions=["operate"]
    )
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[GenerationJob]) -> None:
        retried = refused = 0
        for job_id in queryset.filter(status=JobStatus.FAILED).values_list("pk", flat=True):
            try:
                services.job_retry(job_id=job_id)
            except ApplicationError as error:
                # Today's rules apply to the copy (limits may have changed since): say why.
                self.message_user(request, f"Job {job_id} not retried: {error.message}", messages.ERROR)
                refused += 1
                continue
            retried += 1
        self._report(request, done=retried, verb="Retried", selected=queryset.count() - refused)

    @admin.action(description="Block the client networks of selected jobs", permissions=["block"])
    def block_clients(self, request: HttpRequest, queryset: QuerySet[GenerationJob]) -> None:
        # The network abuse control counts a client under (an IPv6 client's /64), so that the
        # block cannot be sidestepped by moving to the next address.
        networks = sorted(
            {network or ip for network, ip in queryset.order_by().values_list("client_network", "client_ip")}
        )
        blocked = []
        for network in networks:
            try:
                ratelimit_services.block_ip(
                    ip_or_cidr=network, reason=f"Blocked from the jobs list by {request.user}"
                )
            except ApplicationError as error:
                self.message_user(request, f"{network} not blocked: {error.message}", messages.ERROR)
                continue
            blocked.append(network)
        if blocked:
            self.message_user(request, f"Blocked {', '.join(blocked)}.", messages.SUCCESS)

    def _report(self, request: HttpRequest, *, done: int, verb: str, selected: int) -> None:
        message = f"{verb} {done} job{'s' if done != 1 else ''}."
        if selected > done:
            message += f" {selected - done} skipped: their status does not allow it."
        self.message_user(request, message, messages.SUCCESS if done else messages.WARNING)
