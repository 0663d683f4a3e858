"""Anonymous networks are also limited as the wider networks that hold them."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs import selectors, services
from jobs.models import GenerationJob
from ratelimit.callers import aggregate_networks
from ratelimit.models import ClientUsage
from tests.ratelimit.helpers import VALID, submit, submit_all_at_once

pytestmark = pytest.mark.django_db


def test_aggregates_are_the_configured_wider_networks(settings: Any) -> None:
    settings.ANON_AGGREGATE_PREFIXES_V6 = [48, 56, 64]
    settings.ANON_AGGREGATE_PREFIXES_V4 = [24]

    assert aggregate_networks("2001:db8:1:2::7") == ("2001:db8:1::/56", "2001:db8:1::/48")
    assert aggregate_networks("192.0.2.9") == ("192.0.2.0/24",)


def test_many_64s_of_one_48_share_one_daily_quota(api_client: APIClient, settings: Any) -> None:
    settings.SUBMIT_DAILY_QUOTA = 3

    statuses = [submit(api_client, ip=f"2001:db8:7:{subnet:x}::1").status_code for subnet in range(4)]
    elsewhere = submit(api_client, ip="2001:db8:8::1")

    assert statuses == [202, 202, 202, 429]
    assert elsewhere.status_code == 202
    assert ClientUsage.objects.get(network="2001:db8:7::/48").submitted == 3


def test_each_aggregate_level_is_enforced_on_its_own(api_client: APIClient, settings: Any) -> None:
    settings.ANON_DAILY_BUDGET_UNITS = 1
    settings.ANON_AGGREGATE_PREFIXES_V4 = [24]
    # 0.32 units each: three fit in one budget.
    big = {"width": 256, "height": 256, "steps": 16}

    first = [submit(api_client, ip=f"192.0.2.{host}", **big).status_code for host in (1, 2, 3)]
    refused = submit(api_client, ip="192.0.2.4", **big)

    assert first == [202, 202, 202]
    assert refused.json()["error"]["code"] == "daily_budget_exceeded"
    assert submit(api_client, ip="192.0.3.1", **big).status_code == 202


def test_many_64s_of_one_48_share_one_active_job_limit(api_client: APIClient, settings: Any) -> None:
    settings.SUBMIT_MAX_ACTIVE_JOBS = 1
    settings.ANON_AGGREGATE_MAX_ACTIVE_JOBS = 2

    answers = [submit(api_client, ip=f"2001:db8:9:{subnet:x}::1") for subnet in range(4)]
    elsewhere = submit(api_client, ip="2001:db8:a::1")

    assert [answer.status_code for answer in answers] == [202, 202, 429, 429]
    assert answers[2].json()["error"]["code"] == "too_many_active_jobs"
    assert elsewhere.status_code == 202
    assert GenerationJob.objects.filter(client_aggregate="2001:db8:9::/48").count() == 2


@pytest.mark.usefixtures("unserved_model")
@pytest.mark.django_db(transaction=True)
def test_concurrent_submits_from_many_64s_never_pass_the_aggregate_limit(settings: Any) -> None:
    settings.ANON_AGGREGATE_MAX_ACTIVE_JOBS = 3
    subnets = itertools.count(1)  # next() on it is atomic: each thread gets its own /64

    outcomes = submit_all_at_once(
        12, lambda: services.job_submit(client_ip=f"2001:db8:b:{next(subnets):x}::1", **VALID)
    )

    assert sorted(outcomes) == ["accepted"] * 3 + ["too_many_active_jobs"] * 9
    assert GenerationJob.objects.filter(client_aggregate="2001:db8:b::/48").count() == 3


def test_the_64s_of_one_48_take_one_turn_in_the_fair_queue(api_client: APIClient) -> None:
    crowd = [submit(api_client, ip=f"2001:db8:c:{subnet:x}::1") for subnet in range(3)]
    loner = submit(api_client, ip="2001:db8:d::1")
    assert {answer.status_code for answer in [*crowd, loner]} == {202}

    assert selectors.client_turn_order() == ["2001:db8:c::/48", "2001:db8:d::/48"]
    served = [
        services.claim_next_jobs(worker_hostname="gpu@test", max_images=1)[0].client_ip for _ in range(4)
    ]
    # The crowd's oldest, then the loner, then the rest of the crowd: one turn for the whole /48.
    assert served[:2] == ["2001:db8:c::1", "2001:db8:d::1"]


def test_without_aggregates_each_64_is_its_own_account(api_client: APIClient, settings: Any) -> None:
    settings.ANON_AGGREGATE_PREFIXES_V6 = []
    settings.SUBMIT_MAX_ACTIVE_JOBS = 1

    statuses = [submit(api_client, ip=f"2001:db8:e:{subnet:x}::1").status_code for subnet in range(3)]

    assert statuses == [202, 202, 202]
    assert len(selectors.client_turn_order()) == 3
