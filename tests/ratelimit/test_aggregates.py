"""Anonymous networks are also limited as the wider networks that hold them."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from ratelimit.callers import aggregate_networks
from ratelimit.models import ClientUsage
from tests.ratelimit.helpers import submit

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
