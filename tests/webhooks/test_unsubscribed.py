"""A job without a webhook pays nothing for webhooks on its way through the worker."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs import services
from jobs.models import FailureCode

pytestmark = pytest.mark.django_db

CaptureCallbacks = Callable[..., AbstractContextManager[list[Callable[[], Any]]]]


def test_events_of_a_job_without_a_webhook_run_no_query_and_record_no_delivery(
    django_capture_on_commit_callbacks: CaptureCallbacks,
) -> None:
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        services.job_submit(prompt="a red fox", client_ip="203.0.113.9", width=64, height=64, steps=4)
        first = services.claim_next_jobs(worker_hostname="gpu-1", max_images=1)[0]
        services.job_complete(job=first, pngs=[b"\x89PNG"])
        services.job_submit(prompt="a blue fox", client_ip="203.0.113.9", width=64, height=64, steps=4)
        second = services.claim_next_jobs(worker_hostname="gpu-1", max_images=1)[0]
        services.job_fail(job_id=second.pk, code=FailureCode.TIMEOUT, message="Too slow.")

    # Columns named in a SELECT list are fine; a lookup filtering on the subscription, or a
    # delivery table read, is a query made for webhooks.
    webhook_queries = [
        query["sql"]
        for query in queries
        if "webhook" in query["sql"].partition(" WHERE ")[2] or "webhooks_" in query["sql"]
    ]
    assert webhook_queries == []


def test_a_claimed_job_carries_what_the_claim_wrote(settings: Any) -> None:
    submitted = services.job_submit(prompt="a red fox", client_ip="203.0.113.9", width=64, height=64, steps=4)

    claimed = services.claim_next_jobs(worker_hostname="gpu-1", max_images=1)[0]

    stored = type(claimed).objects.get(pk=submitted.pk)
    assert (claimed.status, claimed.started_at, claimed.worker_hostname) == (
        stored.status,
        stored.started_at,
        stored.worker_hostname,
    )
    assert (claimed.progress_step, claimed.progress_total) == (0, 0)
