"""Fair order across clients, queue position and ETA, and the queue bound."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from jobs import selectors, services
from jobs.models import GenerationJob, JobStatus
from tests.factories import GenerationJobFactory, JobImageFactory

pytestmark = pytest.mark.django_db

A, B, C = "198.51.100.1", "198.51.100.2", "198.51.100.3"


def submit(api_client: APIClient, ip: str, **overrides: Any) -> Any:
    body = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 4, **overrides}
    return api_client.post("/api/v1/jobs", body, format="json", REMOTE_ADDR=ip)


def served_clients(*, max_images: int = 1) -> list[list[str]]:
    batches = []
    while batch := services.claim_next_jobs(worker_hostname="gpu@test", max_images=max_images):
        batches.append([job.client_ip for job in batch])
    return batches


def test_clients_are_served_in_turn_so_one_heavy_client_cannot_starve_the_rest(api_client: APIClient) -> None:
    for _ in range(5):
        submit(api_client, A)
    submit(api_client, B)
    submit(api_client, C)

    order = [ip for (ip,) in served_clients()]

    assert order == [A, B, C, A, A, A, A]


def test_least_recently_served_client_goes_first(api_client: APIClient) -> None:
    now = timezone.now()
    GenerationJobFactory(client_ip=A, status=JobStatus.RUNNING, started_at=now - timedelta(minutes=1))
    GenerationJobFactory(client_ip=B, status=JobStatus.RUNNING, started_at=now - timedelta(minutes=5))
    submit(api_client, A)
    submit(api_client, B)
    submit(api_client, C)

    assert [ip for (ip,) in served_clients()] == [C, B, A]


def test_a_batch_fills_with_compatible_jobs_in_turn_order(api_client: APIClient) -> None:
    for _ in range(4):
        submit(api_client, A)
    submit(api_client, B, width=128)  # incompatible with A's size: not in A's batch
    submit(api_client, C)
    submit(api_client, B)

    batches = served_clients(max_images=3)

    assert batches == [[A, B, C], [A, A, A], [B]]


def test_queue_position_agrees_with_the_order_jobs_are_served(api_client: APIClient) -> None:
    GenerationJobFactory(client_ip=C, status=JobStatus.RUNNING, started_at=timezone.now())
    for ip in (A, A, A, B, C, C, A, B):
        submit(api_client, ip)
    queued = GenerationJob.objects.filter(status=JobStatus.QUEUED)
    positions = {job.pk: selectors.job_queue_position(job=job) for job in queued}

    served = []
    while batch := services.claim_next_jobs(worker_hostname="gpu@test", max_images=1):
        served.append(batch[0].pk)

    assert sorted(positions.values()) == list(range(1, 9))
    assert [positions[pk] for pk in served] == list(range(1, 9))


def test_queued_status_carries_position_and_estimates_and_running_does_not(api_client: APIClient) -> None:
    first = submit(api_client, A).json()
    second = submit(api_client, A).json()

    assert first["queue"]["position"] == 1
    assert second["queue"]["position"] == 2
    services.claim_next_jobs(worker_hostname="gpu@test", max_images=1)
    assert api_client.get(f"/api/v1/jobs/{first['id']}").json()["queue"] is None
    assert api_client.get(f"/api/v1/jobs/{second['id']}").json()["queue"]["position"] == 1


def finished_history(*, batches: list[int], run_seconds: float) -> None:
    """Completed jobs on one worker: one batch per entry, with that many jobs in it."""
    started = timezone.now() - timedelta(minutes=5)
    for size in batches:
        for _ in range(size):
            JobImageFactory(
                job__started_at=started,
                job__finished_at=started + timedelta(seconds=run_seconds),
                job__worker_hostname="gpu@test",
            )
        started += timedelta(seconds=run_seconds)


def test_eta_comes_from_measured_throughput_counting_each_batch_once(api_client: APIClient) -> None:
    finished_history(batches=[1, 2, 1], run_seconds=8.0)  # 3 batches: 24 busy seconds for 4 jobs

    throughput = selectors.queue_throughput()
    bodies = [submit(api_client, A).json() for _ in range(3)]

    assert (throughput.seconds_per_job, throughput.run_seconds, throughput.measured_jobs) == (6.0, 8.0, 4)
    starts = [parse_datetime(body["queue"]["estimated_start_at"]) for body in bodies]
    finishes = [parse_datetime(body["queue"]["estimated_finish_at"]) for body in bodies]
    assert [(f - s).total_seconds() for s, f in zip(starts, finishes, strict=True)] == [8.0, 8.0, 8.0]
    # Each later job waits one more job's worth of queue (the submits themselves take ms).
    assert (starts[2] - starts[0]).total_seconds() == pytest.approx(12.0, abs=1.0)


@override_settings(JOB_ETA_FALLBACK_SECONDS=42.0)
def test_eta_falls_back_to_the_setting_without_recent_history() -> None:
    GenerationJobFactory(
        status=JobStatus.COMPLETED,
        started_at=timezone.now() - timedelta(hours=2),
        finished_at=timezone.now() - timedelta(hours=2) + timedelta(seconds=3),
    )

    throughput = selectors.queue_throughput()

    assert (throughput.seconds_per_job, throughput.measured_jobs) == (42.0, 0)


@override_settings(JOB_QUEUE_MAX=2)
def test_submit_over_the_queue_bound_is_503_queue_full_with_retry_after(api_client: APIClient) -> None:
    finished_history(batches=[1], run_seconds=30.0)
    assert submit(api_client, A).status_code == 202
    assert submit(api_client, B).status_code == 202

    response = submit(api_client, C)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "queue_full"
    assert response["Retry-After"] == "30"
    assert response.json()["error"]["retry_after"] == 30
    assert GenerationJob.objects.filter(status=JobStatus.QUEUED).count() == 2


@override_settings(JOB_QUEUE_MAX=0)
def test_a_full_queue_still_answers_deduplicated_requests(api_client: APIClient) -> None:
    original = JobImageFactory(job__seed=7).job

    response = submit(api_client, A, prompt=original.prompt, seed=7, guidance_scale=original.guidance_scale)

    assert (response.status_code, response.json()["status"]) == (202, "completed")


def test_addresses_of_one_ipv6_network_share_one_turn(api_client: APIClient) -> None:
    for host in range(1, 4):
        submit(api_client, f"2001:db8:1:1::{host}")
    submit(api_client, "2001:db8:2:2::1")

    order = [ip for (ip,) in served_clients()]

    assert order[:2] == ["2001:db8:1:1::1", "2001:db8:2:2::1"]


def test_accounts_share_served_compute_by_weight() -> None:
    for _ in range(12):
        GenerationJobFactory(client_ip=A, client_network="key:0000000a", priority_weight=3.0, cost_units=1)
    for _ in range(12):
        GenerationJobFactory(client_ip=B, priority_weight=1.0, cost_units=1)

    order = [ip for (ip,) in served_clients()][:12]

    # Least compute served per unit of weight first; ties to the least recently served.
    assert order == [A, B, A, A, B, A, A, A, B, A, A, A]


def test_a_heavy_job_counts_its_compute_not_one_turn() -> None:
    GenerationJobFactory(client_ip=A, cost_units=8)
    for _ in range(3):
        GenerationJobFactory(client_ip=A, cost_units=1)
    for _ in range(3):
        GenerationJobFactory(client_ip=B, cost_units=1)

    order = [ip for (ip,) in served_clients()]

    assert order == [A, B, B, B, A, A, A]
