"""Job counters kept in Redis where jobs finish: what a scrape reports after the services
finish real jobs, and that a scrape's cost does not grow with the history."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs import services
from jobs.models import FailureCode, GenerationJob, JobStatus
from ops.metrics import JOB_DURATION_BOUNDS
from tests.factories import GenerationJobFactory
from tests.ops.conftest import scrape_in_process

pytestmark = pytest.mark.django_db

FINISHED_AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
BUCKET_LABELS = [str(bound) for bound in JOB_DURATION_BOUNDS] + ["+Inf"]


def bucket(samples: dict[str, float], label: str) -> float:
    return samples[f'imagegen_job_duration_seconds_bucket{{le="{label}"}}']


@pytest.fixture
def complete_job_that_ran(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> Callable[[float], None]:
    """Completes a running job through ``job_complete`` at a run time exact to the microsecond."""
    monkeypatch.setattr(timezone, "now", lambda: FINISHED_AT)

    def complete(seconds: float) -> None:
        job = GenerationJobFactory(running=True, started_at=FINISHED_AT - timedelta(seconds=seconds))
        with django_capture_on_commit_callbacks(execute=True):
            assert services.job_complete(job=job, pngs=[b"\x89PNG"])

    return complete


def test_completed_jobs_advance_the_duration_histogram(
    complete_job_that_ran: Callable[[float], None],
) -> None:
    for seconds in (0.2, 7.0, 400.0):
        complete_job_that_ran(seconds)

    samples = scrape_in_process()

    assert [bucket(samples, label) for label in BUCKET_LABELS] == [1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3]
    assert samples["imagegen_job_duration_seconds_count{}"] == 3
    assert samples["imagegen_job_duration_seconds_sum{}"] == pytest.approx(407.2)
    assert samples['imagegen_jobs_finished_total{status="completed"}'] == 3


@pytest.mark.parametrize(
    ("seconds", "first_bucket"),
    [(0.5, "0.5"), (0.500001, "1.0"), (2.5, "2.5"), (0.0, "0.5"), (300.0, "300.0"), (300.000001, "+Inf")],
)
def test_a_run_counts_in_the_first_bucket_whose_bound_it_does_not_exceed(
    complete_job_that_ran: Callable[[float], None], seconds: float, first_bucket: str
) -> None:
    complete_job_that_ran(seconds)

    samples = scrape_in_process()

    first = BUCKET_LABELS.index(first_bucket)
    assert [bucket(samples, label) for label in BUCKET_LABELS] == [0] * first + [1] * (
        len(BUCKET_LABELS) - first
    )
    assert bucket(samples, "+Inf") == samples["imagegen_job_duration_seconds_count{}"] == 1


def test_failed_jobs_advance_failures_by_code(django_capture_on_commit_callbacks: Any) -> None:
    codes = [FailureCode.TIMEOUT, FailureCode.OUT_OF_MEMORY, FailureCode.TIMEOUT]
    with django_capture_on_commit_callbacks(execute=True):
        for code in codes:
            services.job_fail(job_id=GenerationJobFactory(running=True).pk, code=code, message="failed")

    samples = scrape_in_process()

    assert samples['imagegen_job_failures_total{code="timeout"}'] == 2
    assert samples['imagegen_job_failures_total{code="out_of_memory"}'] == 1
    assert samples['imagegen_jobs_finished_total{status="failed"}'] == 3
    assert samples["imagegen_job_duration_seconds_count{}"] == 0


def test_a_cancelled_job_counts_as_finished_cancelled_not_failed(
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        services.job_cancel(job_id=GenerationJobFactory().pk)

    samples = scrape_in_process()

    assert samples['imagegen_jobs_finished_total{status="cancelled"}'] == 1
    assert samples['imagegen_jobs_finished_total{status="failed"}'] == 0
    assert not any(name.startswith("imagegen_job_failures_total") for name in samples)


def test_a_failure_rolled_back_with_its_transaction_is_not_counted(
    django_capture_on_commit_callbacks: Any,
) -> None:
    job = GenerationJobFactory(running=True)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        services.job_fail(job_id=job.pk, code=FailureCode.TIMEOUT, message="slow")
        raise RuntimeError("the caller's transaction fails after the job did")

    samples = scrape_in_process()

    assert GenerationJob.objects.get(pk=job.pk).status == JobStatus.RUNNING
    assert samples['imagegen_jobs_finished_total{status="failed"}'] == 0


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_redis_down_when_a_job_finishes_never_fails_the_job(
    outcome: str, settings: Any, caplog: pytest.LogCaptureFixture, django_capture_on_commit_callbacks: Any
) -> None:
    job = GenerationJobFactory(running=True)
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"

    with (
        caplog.at_level(logging.WARNING, logger="ops.metrics"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        if outcome == "completed":
            moved = services.job_complete(job=job, pngs=[b"\x89PNG"])
        else:
            moved = services.job_fail(job_id=job.pk, code=FailureCode.TIMEOUT, message="slow")

    assert moved
    assert GenerationJob.objects.get(pk=job.pk).status == outcome
    assert "event=job_metrics_not_recorded" in caplog.text


def seed_finished_jobs(count: int) -> None:
    GenerationJob.objects.bulk_create(
        GenerationJobFactory.build(completed=True, started_at=FINISHED_AT, finished_at=FINISHED_AT)
        for _ in range(count)
    )


def test_a_scrape_runs_the_same_few_queries_however_many_jobs_finished() -> None:
    GenerationJobFactory(running=True)
    seed_finished_jobs(10)
    with CaptureQueriesContext(connection) as few_rows:
        scrape_in_process()
    seed_finished_jobs(500)

    with CaptureQueriesContext(connection) as many_rows:
        samples = scrape_in_process()

    # Jobs by status, the served model's queue, the webhook backlog.
    assert len(few_rows) == len(many_rows) == 3
    assert samples['imagegen_jobs{status="running"}'] == 1
    assert samples['imagegen_jobs{status="queued"}'] == 0


def unbounded_reads(plan: dict[str, Any], *, jobs_indexes: set[str]) -> list[str]:
    """PostgreSQL plan nodes that read the jobs table, or one of its indexes, without a range."""
    found = []
    reads_jobs = (
        plan.get("Relation Name") == GenerationJob._meta.db_table or plan.get("Index Name") in jobs_indexes
    )
    unbounded = plan["Node Type"] == "Seq Scan" or ("Index" in plan["Node Type"] and "Index Cond" not in plan)
    if reads_jobs and unbounded:
        found.append(f"{plan['Node Type']} {plan.get('Index Name', '')}")
    for child in plan.get("Plans", []):
        found += unbounded_reads(child, jobs_indexes=jobs_indexes)
    return found


def test_a_scrape_reads_only_index_ranges_of_the_jobs_table() -> None:
    GenerationJobFactory(running=True)
    seed_finished_jobs(50)
    with CaptureQueriesContext(connection) as scraped:
        scrape_in_process()

    unbounded = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Fresh statistics, else the plan follows whatever earlier tests left in them.
            cursor.execute(f"ANALYZE {GenerationJob._meta.db_table}")
            # A table this small is cheaper to scan: ask for the plan an index allows, if any.
            cursor.execute("SET LOCAL enable_seqscan = off")
        jobs_indexes = set(connection.introspection.get_constraints(cursor, GenerationJob._meta.db_table))
        for query in scraped.captured_queries:
            if connection.vendor == "postgresql":
                cursor.execute(f"EXPLAIN (FORMAT JSON) {query['sql']}")
                unbounded += unbounded_reads(cursor.fetchone()[0][0]["Plan"], jobs_indexes=jobs_indexes)
            else:
                cursor.execute(f"EXPLAIN QUERY PLAN {query['sql']}")
                unbounded += [row[-1] for row in cursor.fetchall() if not row[-1].startswith("SEARCH")]

    assert scraped.captured_queries
    assert unbounded == []
