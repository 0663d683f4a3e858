"""The queue dashboard: its numbers, its HTMX refresh, its live workers, its query budget."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from jobs import selectors
from jobs.models import FailureCode, GenerationJob
from tests.factories import GenerationJobFactory
from tests.support.processes import WorkerProcess

DASHBOARD = reverse("admin:jobs_generationjob_dashboard")


def finished(ago: timedelta, *, run_seconds: float, **fields: object) -> GenerationJob:
    end = timezone.now() - ago
    kind = {"completed": True} if "failure_code" not in fields else {"failed": True}
    return GenerationJobFactory(
        **kind, finished_at=end, started_at=end - timedelta(seconds=run_seconds), **fields
    )


@pytest.fixture
def busy_queue() -> None:
    """Two queued (the oldest for 2 minutes), one running, four completed in the last day
    (three in the last 15 minutes), three failed in the last day (two in the last hour)."""
    oldest = GenerationJobFactory()
    GenerationJob.objects.filter(pk=oldest.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    GenerationJobFactory()
    GenerationJobFactory(running=True)
    for run_seconds in (1, 2, 10):
        finished(timedelta(minutes=5), run_seconds=run_seconds)
    finished(timedelta(hours=2), run_seconds=4)
    finished(timedelta(days=2), run_seconds=100)
    finished(timedelta(minutes=10), run_seconds=1, failure_code=FailureCode.OUT_OF_MEMORY)
    finished(timedelta(minutes=20), run_seconds=1, failure_code=FailureCode.OUT_OF_MEMORY)
    finished(timedelta(hours=3), run_seconds=1, failure_code=FailureCode.TIMEOUT)
    finished(timedelta(days=3), run_seconds=1, failure_code=FailureCode.TIMEOUT)


@pytest.mark.django_db
@pytest.mark.usefixtures("busy_queue")
def test_dashboard_numbers_count_queue_throughput_failures_and_run_time_percentiles() -> None:
    stats = selectors.queue_dashboard()

    assert (stats.queued, stats.running) == (2, 1)
    assert stats.oldest_queued_age_seconds is not None and stats.oldest_queued_age_seconds >= 120
    # 3 completed in 15 minutes: 0.2 a minute, so the 2 queued jobs clear in 10 minutes.
    assert stats.completed_per_minute == pytest.approx(0.2)
    assert stats.estimated_wait_seconds == pytest.approx(600)
    assert (stats.completed_last_hour, stats.completed_last_day) == (3, 4)
    assert (stats.failed_last_hour, stats.failed_last_day) == (2, 3)
    assert [(f.code, f.last_hour, f.last_day) for f in stats.failures] == [
        ("out_of_memory", 2, 2),
        ("timeout", 0, 1),
    ]
    # Run times of the last day's completions: 1, 2, 4, 10 s (nearest rank).
    assert (stats.run_seconds_p50, stats.run_seconds_p95) == (2.0, 10.0)


@pytest.mark.django_db
@pytest.mark.usefixtures("busy_queue")
def test_dashboard_shows_each_models_queue_the_idle_configured_ones_included(
    admin_client: Client, settings: Any
) -> None:
    settings.GENERATOR_MODELS = {
        **settings.GENERATOR_MODELS,
        "idle-model": {"source": "/nowhere", "family": "sdxl"},
    }
    waiting = GenerationJobFactory(model="other-model")
    GenerationJob.objects.filter(pk=waiting.pk).update(created_at=timezone.now() - timedelta(minutes=5))

    lines = {line.model: line for line in selectors.queue_dashboard().by_model}
    page = admin_client.get(DASHBOARD).content.decode()

    assert [(model, line.queued, line.running) for model, line in lines.items()] == [
        ("tiny-sd", 2, 1),
        ("idle-model", 0, 0),
        ("other-model", 1, 0),
    ]
    assert lines["other-model"].oldest_queued_age_seconds is not None
    assert lines["other-model"].oldest_queued_age_seconds >= 300
    assert lines["idle-model"].oldest_queued_age_seconds is None
    assert re.search(r"<th scope=\"row\">other-model</th><td>1</td><td>0</td><td>\d+ s</td>", page)


@pytest.mark.django_db
def test_dashboard_numbers_of_an_empty_service_are_zero_and_the_wait_is_zero() -> None:
    stats = selectors.queue_dashboard()

    assert (stats.queued, stats.running, stats.completed_last_day, stats.failed_last_day) == (0, 0, 0, 0)
    assert stats.estimated_wait_seconds == 0
    assert (stats.oldest_queued_age_seconds, stats.run_seconds_p50, stats.run_seconds_p95) == (
        None,
        None,
        None,
    )


@pytest.mark.django_db
def test_dashboard_wait_is_unknown_when_jobs_wait_and_nothing_completed_lately() -> None:
    GenerationJobFactory()
    finished(timedelta(hours=2), run_seconds=3)

    assert selectors.queue_dashboard().estimated_wait_seconds is None


@pytest.mark.django_db
def test_dashboard_queries_stay_the_same_with_more_rows() -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            selectors.queue_dashboard()
        return len(captured)

    for _ in range(2):
        finished(timedelta(minutes=1), run_seconds=2)
        finished(timedelta(minutes=1), run_seconds=2, failure_code=FailureCode.TIMEOUT)
    few = queries()
    for _ in range(40):
        finished(timedelta(minutes=1), run_seconds=2)
        finished(timedelta(minutes=1), run_seconds=2, failure_code=FailureCode.OUT_OF_MEMORY)
        GenerationJobFactory()

    assert queries() == few


@pytest.mark.django_db
@pytest.mark.usefixtures("busy_queue")
def test_dashboard_page_shows_the_numbers_and_polls_them_with_htmx_from_static_scripts(
    admin_client: Client,
) -> None:
    html = admin_client.get(DASHBOARD).content.decode()

    assert re.search(r'id="stat-queued"><a [^>]*>2</a>', html)
    assert 'id="stat-wait">600 s<' in html
    assert 'id="stat-failed-day">3<' in html
    assert 'id="stat-p95">10.0 s<' in html
    assert f'hx-get="{DASHBOARD}"' in html and 'hx-trigger="every 5s"' in html
    # The CSP allows scripts from our origin only: every script is a static file.
    scripts = re.findall(r"<script[^>]*>", html)
    assert any("htmx" in tag for tag in scripts)
    assert all('src="/static/' in tag for tag in scripts)


@pytest.mark.django_db
@pytest.mark.usefixtures("busy_queue")
def test_dashboard_answers_an_htmx_poll_with_the_numbers_alone(admin_client: Client) -> None:
    html = admin_client.get(DASHBOARD, headers={"HX-Request": "true"}).content.decode()

    assert 'id="stat-completed-day">4<' in html
    assert "<html" not in html and "hx-trigger" not in html


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_dashboard_lists_the_live_gpu_worker(admin_client: Client, gpu_worker: WorkerProcess) -> None:
    html = admin_client.get(DASHBOARD, headers={"HX-Request": "true"}).content.decode()

    assert gpu_worker.hostname in html


def chart_values(page: str, chart_id: str) -> dict[str, list[int]]:
    """``{series: [value per 5-minute bucket, oldest first]}`` read back from a chart's SVG."""
    svg = re.search(rf'<svg id="{chart_id}".*?</svg>', page, flags=re.DOTALL)
    assert svg is not None, chart_id
    series: dict[str, list[int]] = {}
    for name, value in re.findall(r'<rect [^>]*data-series="([^"]+)"[^>]*data-value="(\d+)"', svg.group(0)):
        series.setdefault(name, []).append(int(value))
    return series


def test_dashboard_charts_the_last_hour_from_the_jobs_timestamps(admin_client: Client) -> None:
    now = timezone.now()
    # Waited from 42 to 17 minutes ago, then ran until 7 minutes ago.
    waited_then_ran = GenerationJobFactory(
        completed=True, started_at=now - timedelta(minutes=17), finished_at=now - timedelta(minutes=7)
    )
    GenerationJob.objects.filter(pk=waited_then_ran.pk).update(created_at=now - timedelta(minutes=42))
    for _ in range(2):
        finished(timedelta(minutes=7), run_seconds=1)
    waiting = GenerationJobFactory()
    GenerationJob.objects.filter(pk=waiting.pk).update(created_at=now - timedelta(minutes=32))
    for _ in range(2):
        finished(timedelta(minutes=22), run_seconds=1, failure_code=FailureCode.TIMEOUT)
    finished(timedelta(minutes=7), run_seconds=1, failure_code=FailureCode.OUT_OF_MEMORY)
    finished(timedelta(minutes=90), run_seconds=1)  # older than the hour: not drawn

    page = admin_client.get(DASHBOARD).content.decode()

    #           buckets ending 55, 50, ... 5 and 0 minutes ago
    assert chart_values(page, "chart-completed") == {"completed": [0] * 10 + [3, 0]}
    assert chart_values(page, "chart-queue-depth") == {"queued": [0, 0, 0, 1, 1, 2, 2, 2, 1, 1, 1, 1]}
    assert chart_values(page, "chart-failures") == {
        "out_of_memory": [0] * 10 + [1, 0],
        "timeout": [0] * 7 + [2] + [0] * 4,
    }
    # The tallest bar fills the chart: bars are scaled to the chart's own peak.
    tallest = re.search(r'<svg id="chart-completed".*?height="60.0" fill', page, flags=re.DOTALL)
    assert tallest is not None
