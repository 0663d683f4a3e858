"""The web page: a server-rendered form and a job panel that HTMX polls until the job ends;
a plain browser gets full pages, an HTMX request just the part that changed."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any
from urllib.parse import quote

from django.core.handlers.asgi import ASGIRequest
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling, push_url, reswap, retarget, trigger_client_event
from django_htmx.middleware import HtmxDetails

from core.errors import ApplicationError, invalid_parameters
from jobs import selectors, services
from jobs.api.errors import http_status
from jobs.forms import CUSTOM_SIZE, GenerateForm
from jobs.models import GenerationJob, JobImage, JobStatus
from jobs.problems import NextStep, duration_text, problem_for
from jobs.validation import job_limits
from ratelimit.client_ip import client_ip
from ratelimit.services import enforce_status_poll_limit


class HtmxHttpRequest(HttpRequest):
    """A request as django-htmx's middleware leaves it (for typing)."""

    htmx: HtmxDetails


RECENT_SESSION_KEY = "recent_job_ids"
RECENT_LIMIT = 12
POLL_SECONDS = 1
RECENT_CHANGED_EVENT = "recent-changed"


def _remember_job(request: HtmxHttpRequest, job: GenerationJob) -> None:
    recent = [job_id for job_id in request.session.get(RECENT_SESSION_KEY, []) if job_id != str(job.pk)]
    request.session[RECENT_SESSION_KEY] = [str(job.pk), *recent][:RECENT_LIMIT]


def _recent_jobs(request: HtmxHttpRequest) -> list[GenerationJob]:
    return selectors.jobs_in_order(job_ids=request.session.get(RECENT_SESSION_KEY, []))


def _busy_label(job: GenerationJob, queue_position: int | None) -> str:
    """The Generate button's text while this job is active."""
    if job.status == JobStatus.QUEUED:
        return f"Queued · #{queue_position} in line" if queue_position else "Queued"
    if job.progress_total:
        return f"Generating · step {job.progress_step} of {job.progress_total}"
    return "Starting…"


def _announcement(job: GenerationJob, queue_position: int | None) -> str:
    """The short status screen readers hear; it changes only when the state does, not per step."""
    if job.status == JobStatus.QUEUED:
        return f"Queued, number {queue_position} in line." if queue_position else "Queued."
    if job.status == JobStatus.RUNNING:
        return "Generating your image."
    if job.status == JobStatus.COMPLETED:
        return "Your image is ready."
    return f"{problem_for(job.failure_code).title}."


def _lighter_arguments(job: GenerationJob) -> dict[str, Any] | None:
    """Half the size and half the steps, within the limits; None if nothing can get lighter."""
    ranges = job_limits().ranges()
    width, height = (max(ranges["width"][0], side // 2 // 8 * 8) for side in (job.width, job.height))
    steps = max(ranges["steps"][0], job.steps // 2)
    if (width, height, steps) == (job.width, job.height, job.steps):
        return None
    return {"width": width, "height": height, "steps": steps}


def _blank_image_uri(*, width: int, height: int) -> str:
    """An empty SVG of the image's size, taking exactly the result's box: CSP forbids the inline
    style a sized box would need, and an image carries its aspect ratio in its attributes."""
    svg = f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'/>"
    return "data:image/svg+xml," + quote(svg)


def _resubmit_fields(job: GenerationJob, **overrides: Any) -> list[tuple[str, Any]]:
    """Hidden form fields that submit this job's request again, with some values changed."""
    values = {**GenerateForm.values_of(job), "size": CUSTOM_SIZE, **overrides}
    # Strings, so that the template writes them exactly (no localized number formatting).
    return [(name, "" if value is None else str(value)) for name, value in values.items()]


def _job_context(job: GenerationJob, request: HttpRequest) -> dict[str, Any]:
    queue_position = selectors.job_queue_position(job=job)
    images = list(job.images.all())
    context: dict[str, Any] = {
        "job": job,
        "active": not job.is_terminal,
        "queue_position": queue_position,
        "busy_label": _busy_label(job, queue_position) if not job.is_terminal else "",
        "announcement": _announcement(job, queue_position),
        "poll_seconds": POLL_SECONDS,
        # The event stream needs the ASGI server (production's); served over WSGI the page polls.
        "live_stream": isinstance(request, ASGIRequest),
        # One frame per requested image, each already at the image's aspect ratio, so the
        # results drop into boxes that were there from the start.
        "frames": [images[index] if index < len(images) else None for index in range(job.num_images)],
        "sizer_src": _blank_image_uri(width=job.width, height=job.height),
    }
    if job.status == JobStatus.COMPLETED:
        if job.started_at and job.finished_at:
            context["run_seconds"] = round((job.finished_at - job.started_at).total_seconds(), 1)
        context["again_fields"] = _resubmit_fields(job)
        context["new_seed_fields"] = _resubmit_fields(job, seed=None)
    if job.failure_code:
        problem = problem_for(job.failure_code)
        context["problem"] = problem
        context["retry_fields"] = _resubmit_fields(job, seed=None)
        lighter = _lighter_arguments(job) if problem.next_step == NextStep.LIGHTER else None
        if lighter:
            context["lighter"] = lighter
            context["lighter_hint"] = (
                f"{lighter['width']}\N{MULTIPLICATION SIGN}{lighter['height']}, {lighter['steps']} steps"
            )
            context["lighter_fields"] = _resubmit_fields(job, **lighter)
    return context


def _page(
    request: HtmxHttpRequest,
    *,
    form: GenerateForm,
    job: GenerationJob | None = None,
    error: ApplicationError | None = None,
) -> HttpResponse:
    context: dict[str, Any] = {
        "form": form,
        "recent_jobs": _recent_jobs(request),
        "error": _error_context(error),
        "composer_busy": job is not None and not job.is_terminal,
    }
    if job is not None:
        context.update(_job_context(job, request))
    return _with_retry_after(render(request, "jobs/page.html", context, status=_status(error)), error)


def _composer_partial(
    request: HtmxHttpRequest, *, form: GenerateForm, error: ApplicationError | None
) -> HttpResponse:
    """The form with its problem, swapped over the form whatever element the request aimed at."""
    html = render_to_string(
        "jobs/_composer.html", {"form": form, "error": _error_context(error)}, request=request
    )
    response = retarget(reswap(HttpResponse(html, status=_status(error)), "outerHTML"), "#composer")
    return _with_retry_after(response, error)


def _status(error: ApplicationError | None) -> int:
    return http_status(error) if error is not None else 200


def _with_retry_after(response: HttpResponse, error: ApplicationError | None) -> HttpResponse:
    if error is not None and error.retry_after is not None:
        response["Retry-After"] = str(error.retry_after)
    return response


def _error_context(error: ApplicationError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {
        "problem": problem_for(error.code),
        "message": error.message,
        "retry_after": error.retry_after,
        "retry_after_text": duration_text(error.retry_after) if error.retry_after is not None else "",
    }


def _job_partial(
    request: HtmxHttpRequest, job: GenerationJob, *, with_recent: bool, stop_polling: bool = False
) -> HttpResponse:
    """The job panel; ``with_recent`` also tells the recent list to reload, by an event: when a poll
    and a cancel cross, an out-of-band swap in the later answer would find no target."""
    response_class = HttpResponseStopPolling if stop_polling else HttpResponse
    response = response_class(render_to_string("jobs/_job.html", _job_context(job, request), request=request))
    return trigger_client_event(response, RECENT_CHANGED_EVENT) if with_recent else response


@require_http_methods(["GET", "POST"])
def home(request: HtmxHttpRequest) -> HttpResponse:
    """The page with an empty form (GET), or a submitted generation (POST)."""
    if request.method == "GET":
        return _page(request, form=GenerateForm())
    form = GenerateForm(request.POST)
    try:
        if not form.is_valid():
            raise invalid_parameters({})
        job = services.job_submit(client_ip=client_ip(request), **form.submit_arguments())
    except ApplicationError as error:
        form.add_job_error(error)
        if request.htmx:
            return _composer_partial(request, form=form, error=error)
        return _page(request, form=form, error=error)
    _remember_job(request, job)
    job_url = reverse("web:job", kwargs={"job_id": job.pk})
    if request.htmx:
        return push_url(_job_partial(request, job, with_recent=True), job_url)
    return redirect(job_url)


@require_GET
def job_page(request: HtmxHttpRequest, job_id: uuid.UUID) -> HttpResponse:
    """A job's own page: the form filled with its settings and its panel (a bookmarkable URL)."""
    job = _job_or_404(job_id)
    return _page(request, form=GenerateForm.for_job(job), job=job)


@require_GET
def job_status(request: HtmxHttpRequest, job_id: uuid.UUID) -> HttpResponse:
    """The job panel HTMX polls; a terminal job answers 286 so that the polling stops."""
    try:
        enforce_status_poll_limit(client_ip=client_ip(request))
    except ApplicationError as error:
        # Nothing to swap: the panel stays as it is and htmx asks again on its next tick.
        return reswap(_with_retry_after(HttpResponse(status=http_status(error)), error), "none")
    job = _job_or_404(job_id)
    return _job_partial(request, job, with_recent=job.is_terminal, stop_polling=job.is_terminal)


@require_POST
def job_cancel(request: HtmxHttpRequest, job_id: uuid.UUID) -> HttpResponse:
    """Cancels a queued or running job; a job that ended meanwhile is shown as it ended."""
    job = _job_or_404(job_id)
    # A job that finished (or was cancelled) first refuses; showing its current state says so.
    with contextlib.suppress(ApplicationError):
        services.job_cancel(job_id=job.pk)
    job = _job_or_404(job_id)
    if request.htmx:
        return _job_partial(request, job, with_recent=True)
    return redirect("web:job", job_id=job.pk)


@require_GET
def image_download(request: HtmxHttpRequest, job_id: uuid.UUID, index: int) -> FileResponse:
    """The PNG as an attachment named after the prompt and seed, e.g. ``a-red-fox-1234.png``."""
    image = JobImage.objects.select_related("job").filter(job_id=job_id, index=index).first()
    if image is None:
        raise Http404
    name = slugify(image.job.prompt)[:48].strip("-") or "image"
    return FileResponse(image.file.open("rb"), as_attachment=True, filename=f"{name}-{image.seed}.png")


@require_GET
def recent(request: HtmxHttpRequest) -> HttpResponse:
    """This browser's recent images, reloaded by the page when a job starts or ends."""
    return render(request, "jobs/_recent.html", {"recent_jobs": _recent_jobs(request)})


def csrf_failure(request: HtmxHttpRequest, reason: str = "") -> HttpResponse:
    """A rejected form (an expired page, cookies off) explained on the page, not a bare 403."""
    error = ApplicationError(code="csrf_failed", message=reason)
    if request.htmx:
        return _composer_partial(request, form=GenerateForm(), error=error)
    return _page(request, form=GenerateForm(), error=error)


def _job_or_404(job_id: uuid.UUID) -> GenerationJob:
    try:
        return selectors.job_get(job_id=job_id)
    except ApplicationError:
        raise Http404 from None
