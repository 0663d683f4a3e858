"""Budgets and per-job caps in compute units: their codes, Retry-After, and exact spending
under concurrency."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import services
from jobs.models import FailureCode, GenerationJob, JobStatus
from ratelimit.callers import api_key_caller
from ratelimit.models import ApiKey, ClientUsage
from ratelimit.services import api_key_create
from tests.ratelimit.helpers import VALID, submit, submit_all_at_once

pytestmark = pytest.mark.django_db


def test_a_job_over_the_per_job_cap_is_400_job_too_expensive_naming_the_limit(
    api_client: APIClient, settings: Any
) -> None:
    settings.ANON_MAX_JOB_UNITS = 1

    response = submit(api_client, ip="198.51.100.90", width=512, height=512, steps=25)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "job_too_expensive"
    assert (error["cost_units"], error["max_job_units"]) == (2.0, 1)
    assert "1" in error["message"]
    assert not GenerationJob.objects.exists()
    assert not ClientUsage.objects.exists()


def test_a_spent_budget_is_429_daily_budget_exceeded_with_retry_after_to_midnight(
    api_client: APIClient, settings: Any
) -> None:
    settings.ANON_DAILY_BUDGET_UNITS = 1
    ClientUsage.objects.create(network="198.51.100.91", day=timezone.now().date(), cost_milliunits=995)

    accepted = submit(api_client, ip="198.51.100.91")
    refused = submit(api_client, ip="198.51.100.91")

    assert accepted.status_code == 202
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "daily_budget_exceeded"
    assert 1 <= int(refused["Retry-After"]) <= 24 * 3600
    assert ClientUsage.objects.get(network="198.51.100.91").cost_milliunits == 1000
    assert GenerationJob.objects.count() == 1


def test_a_key_has_its_own_budget_and_cap(api_client: APIClient) -> None:
    _api_key, plain, _webhook_secret = api_key_create(name="acme", max_job_units=4, daily_budget_units=1)
    headers = {"REMOTE_ADDR": "198.51.100.92", "HTTP_AUTHORIZATION": f"Bearer {plain}"}

    too_big = api_client.post(
        "/api/v1/jobs", {**VALID, "width": 1024, "height": 1024, "steps": 25}, format="json", **headers
    )
    over_budget = api_client.post(
        "/api/v1/jobs", {**VALID, "width": 512, "height": 512, "steps": 25}, format="json", **headers
    )

    assert too_big.json()["error"]["code"] == "job_too_expensive"
    assert over_budget.json()["error"]["code"] == "daily_budget_exceeded"


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_submits_of_one_key_never_overspend_a_nearly_spent_budget() -> None:
    api_key, _plain, _webhook_secret = api_key_create(
        name="acme", daily_budget_units=10, max_active_jobs=100, submit_rate="1000/m"
    )
    ClientUsage.objects.create(network=api_key.account, day=timezone.now().date(), cost_milliunits=9990)
    caller = api_key_caller(ApiKey.objects.get(pk=api_key.pk), client_ip="198.51.100.93")
    contenders = 20
    outcomes = submit_all_at_once(
        contenders, lambda: services.job_submit(client_ip="198.51.100.93", caller=caller, **VALID)
    )

    # 9.99 + 2 x 0.005 = 10.000: exactly two fit.
    assert sorted(outcomes) == ["accepted"] * 2 + ["daily_budget_exceeded"] * (contenders - 2)
    assert ClientUsage.objects.get(network=api_key.account).cost_milliunits == 10_000
    assert GenerationJob.objects.filter(api_key=api_key).count() == 2


def usage_units(network: str) -> int:
    return ClientUsage.objects.get(network=network).cost_milliunits


def test_a_job_cancelled_before_it_started_gives_its_cost_back(api_client: APIClient, settings: Any) -> None:
    settings.ANON_DAILY_BUDGET_UNITS = 1
    ClientUsage.objects.create(network="198.51.100.94", day=timezone.now().date(), cost_milliunits=995)
    first = submit(api_client, ip="198.51.100.94")
    refused = submit(api_client, ip="198.51.100.94")

    cancelled = api_client.post(f"/api/v1/jobs/{first.json()['id']}/cancel", REMOTE_ADDR="198.51.100.94")
    again = submit(api_client, ip="198.51.100.94")

    assert (first.status_code, refused.status_code, cancelled.status_code) == (202, 429, 200)
    assert again.status_code == 202  # the budget had room again
    assert usage_units("198.51.100.94") == 1000
    # The quota counts submissions, not compute: the cancelled one still counts.
    assert ClientUsage.objects.get(network="198.51.100.94").submitted == 2


def test_a_job_cancelled_while_running_keeps_its_cost(api_client: APIClient) -> None:
    job_id = submit(api_client, ip="198.51.100.95").json()["id"]
    GenerationJob.objects.filter(pk=job_id).update(status=JobStatus.RUNNING, started_at=timezone.now())

    services.job_cancel(job_id=job_id)

    assert usage_units("198.51.100.95") == 5


def test_an_anonymous_refund_reaches_its_aggregate_networks(api_client: APIClient, settings: Any) -> None:
    settings.ANON_AGGREGATE_PREFIXES_V6 = [56, 48]
    job_id = submit(api_client, ip="2001:db8:9:1::7").json()["id"]
    charged = {
        network: usage_units(network)
        for network in ("2001:db8:9:1::/64", "2001:db8:9::/56", "2001:db8:9::/48")
    }

    services.job_cancel(job_id=job_id)

    assert set(charged.values()) == {5}
    assert [usage_units(network) for network in charged] == [0, 0, 0]


def test_a_keys_job_failed_past_its_deadline_in_the_queue_gives_its_cost_back() -> None:
    api_key, _plain, _webhook_secret = api_key_create(name="acme")
    caller = api_key_caller(ApiKey.objects.get(pk=api_key.pk), client_ip="198.51.100.96")
    job = services.job_submit(client_ip="198.51.100.96", caller=caller, **VALID)
    GenerationJob.objects.filter(pk=job.pk).update(deadline_at=timezone.now())

    failed = services.jobs_fail_overdue()

    assert failed == 1
    assert GenerationJob.objects.get(pk=job.pk).failure_code == FailureCode.DEADLINE_EXCEEDED
    assert usage_units(api_key.account) == 0
