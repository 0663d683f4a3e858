"""Budgets and per-job caps in compute units: their codes, Retry-After, and exact spending
under concurrency."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import services
from jobs.models import GenerationJob
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
