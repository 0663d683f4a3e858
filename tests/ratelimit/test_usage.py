"""Per-network usage: what was recorded matches what happened, and polls write nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import services
from jobs.models import FailureCode, GenerationJob
from ratelimit.selectors import usage_period_start, usage_top_networks
from ratelimit.services import block_ip
from tests.ratelimit.helpers import fresh_window_client, submit

pytestmark = pytest.mark.django_db


def run_next_job() -> GenerationJob:
    [job] = services.claim_next_jobs(worker_hostname="gpu@test", max_images=1)
    return job


def test_usage_counters_match_what_happened(api_client: APIClient, settings: Any) -> None:
    settings.SUBMIT_RATE = "4/m"
    ip = fresh_window_client("198.51.100.{}")
    accepted = [submit(api_client, ip=ip).status_code for _ in range(4)]
    refused = submit(api_client, ip=ip).status_code

    completed = run_next_job()
    assert services.job_complete(job=completed, pngs=[b"\x89PNG fake"])
    out_of_memory = run_next_job()
    services.job_fail(job_id=out_of_memory.id, code=FailureCode.OUT_OF_MEMORY, message="oom")
    timed_out = run_next_job()
    services.job_fail(job_id=timed_out.id, code=FailureCode.TIMEOUT, message="slow")
    # Another client, counted apart; submitted after the runs, since the queue is fair and
    # would otherwise serve it in turn between this client's jobs.
    submit(api_client, ip="192.0.2.1")

    [usage] = [
        row
        for row in usage_top_networks(since=timezone.now().date(), order_by="submitted")
        if row.network == ip
    ]
    finished = GenerationJob.objects.filter(pk__in=[completed.id, out_of_memory.id, timed_out.id])
    run_seconds = sum((job.finished_at - job.started_at).total_seconds() for job in finished)
    assert (accepted, refused) == ([202] * 4, 429)
    assert (usage.submitted, usage.completed, usage.failed) == (4, 1, 2)
    assert usage.failures == {"out_of_memory": 1, "timeout": 1}
    assert usage.refusals == {"rate_limited": 1}
    assert usage.gpu_seconds == pytest.approx(run_seconds)
    assert usage.first_seen is not None and usage.last_seen is not None
    assert usage.first_seen <= usage.last_seen


def test_usage_ranks_networks_by_gpu_seconds_and_by_refusals(api_client: APIClient, settings: Any) -> None:
    for ip in ("198.51.100.1", "198.51.100.2"):
        submit(api_client, ip=ip)
    heavy = GenerationJob.objects.get(client_ip="198.51.100.2")
    services.claim_next_jobs(worker_hostname="gpu@test", max_images=2)
    GenerationJob.objects.filter(pk=heavy.pk).update(started_at=timezone.now() - timedelta(seconds=30))
    heavy.refresh_from_db()
    services.job_complete(job=heavy, pngs=[b"\x89PNG fake"])
    block_ip(ip_or_cidr="192.0.2.0/24", reason="abuse")
    for _ in range(3):
        submit(api_client, ip="192.0.2.9")

    since = usage_period_start(period="week")
    by_gpu = usage_top_networks(since=since, order_by="gpu_seconds")
    by_refusals = usage_top_networks(since=since, order_by="refused")

    assert [row.network for row in by_gpu] == ["198.51.100.2", "198.51.100.1"]
    assert by_gpu[0].gpu_seconds >= 30
    assert [(row.network, row.refusals, row.blocked_by) for row in by_refusals] == [
        ("192.0.2.9", {"blocked": 3}, ["192.0.2.0/24"])
    ]


def test_status_polls_write_nothing_to_the_database(api_client: APIClient) -> None:
    job = submit(api_client, ip="198.51.100.60").json()

    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            assert api_client.get(f"/api/v1/jobs/{job['id']}", REMOTE_ADDR="198.51.100.60").status_code == 200

    writes = [q["sql"] for q in queries if q["sql"].split()[0].upper() in ("INSERT", "UPDATE", "DELETE")]
    assert queries  # the polls did read the job
    assert writes == []
