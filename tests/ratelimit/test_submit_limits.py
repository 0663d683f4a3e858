"""Limits on job submission through the API, against the real Redis and database."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from redis import Redis
from rest_framework.test import APIClient

from core.errors import ApplicationError
from jobs import services
from jobs.models import GenerationJob
from ratelimit import services as ratelimit_services
from ratelimit.services import block_ip, forget_poll_allowances
from tests.ratelimit.helpers import VALID, fresh_window_client, submit, submit_all_at_once
from tests.support.redis_state import redis_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def production_rate(settings: Any) -> None:
    settings.SUBMIT_RATE = "8/m"


def test_ninth_submit_in_a_minute_is_429_with_retry_after(
    api_client: APIClient, production_rate: None
) -> None:
    ip = fresh_window_client("198.51.100.{}")

    statuses = [submit(api_client, ip=ip).status_code for _ in range(8)]
    refused = submit(api_client, ip=ip)

    assert statuses == [202] * 8
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert error["retry_after"] == int(refused["Retry-After"])
    assert GenerationJob.objects.count() == 8


def test_spoofed_forwarded_for_from_an_untrusted_peer_does_not_change_the_key(
    api_client: APIClient, production_rate: None
) -> None:
    ip = fresh_window_client("198.51.100.{}")

    statuses = [submit(api_client, ip=ip, forwarded_for=f"203.0.113.{n}").status_code for n in range(9)]

    assert statuses == [202] * 8 + [429]
    assert set(GenerationJob.objects.values_list("client_ip", flat=True)) == {ip}


def test_forwarded_for_through_a_trusted_proxy_is_the_client(
    api_client: APIClient, production_rate: None, settings: Any
) -> None:
    settings.CLIENT_IP_TRUSTED_PROXIES = ["10.0.0.0/8"]
    first = fresh_window_client("203.0.113.{}")
    second = fresh_window_client("192.0.2.{}")

    first_statuses = [submit(api_client, ip="10.0.0.5", forwarded_for=first).status_code for _ in range(9)]
    second_status = submit(api_client, ip="10.0.0.5", forwarded_for=f"{first}, {second}").status_code

    # The proxy's own address never became the key: each client has its own window.
    assert first_statuses == [202] * 8 + [429]
    assert second_status == 202
    assert GenerationJob.objects.filter(client_ip=second).count() == 1


def test_ipv6_addresses_in_one_prefix_share_one_limit(api_client: APIClient, settings: Any) -> None:
    settings.SUBMIT_MAX_ACTIVE_JOBS = 1

    first = submit(api_client, ip="2001:db8:1:2::1")
    same_prefix = submit(api_client, ip="2001:db8:1:2:ffff:ffff:ffff:ffff")
    other_prefix = submit(api_client, ip="2001:db8:1:3::1")

    assert (first.status_code, same_prefix.status_code, other_prefix.status_code) == (202, 429, 202)
    assert same_prefix.json()["error"]["code"] == "too_many_active_jobs"
    assert GenerationJob.objects.get(pk=first.json()["id"]).client_network == "2001:db8:1:2::/64"


def test_second_active_job_is_refused_until_the_first_finishes(api_client: APIClient, settings: Any) -> None:
    settings.SUBMIT_MAX_ACTIVE_JOBS = 1
    first = submit(api_client, ip="198.51.100.20").json()

    refused = submit(api_client, ip="198.51.100.20")
    services.job_cancel(job_id=first["id"])
    accepted = submit(api_client, ip="198.51.100.20")

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_active_jobs"
    assert "Retry-After" in refused
    assert accepted.status_code == 202


@pytest.mark.usefixtures("unserved_model")
@pytest.mark.django_db(transaction=True)
def test_concurrent_submits_cannot_create_two_active_jobs(settings: Any) -> None:
    settings.SUBMIT_MAX_ACTIVE_JOBS = 1
    contenders = 4
    outcomes = submit_all_at_once(contenders, lambda: services.job_submit(client_ip="198.51.100.30", **VALID))

    assert sorted(outcomes) == ["accepted"] + ["too_many_active_jobs"] * (contenders - 1)
    # Any status: a live GPU worker (another test's) may already have claimed the one job.
    assert GenerationJob.objects.filter(client_ip="198.51.100.30").count() == 1


def test_daily_quota_refuses_with_its_own_code(api_client: APIClient, settings: Any) -> None:
    settings.SUBMIT_DAILY_QUOTA = 2

    statuses = [submit(api_client, ip="198.51.100.40").status_code for _ in range(2)]
    refused = submit(api_client, ip="198.51.100.40")

    assert statuses == [202, 202]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "daily_quota_exceeded"
    assert 1 <= int(refused["Retry-After"]) <= 24 * 3600


def test_blocklisted_cidr_is_403_blocked(api_client: APIClient) -> None:
    block_ip(ip_or_cidr="203.0.113.0/24", reason="abuse")
    block_ip(ip_or_cidr="2001:db8:bad::/48", reason="abuse")

    inside = submit(api_client, ip="203.0.113.50")
    inside_v6 = submit(api_client, ip="2001:db8:bad:1::7")
    outside = submit(api_client, ip="203.0.114.50")

    assert (inside.status_code, inside_v6.status_code, outside.status_code) == (403, 403, 202)
    assert inside.json()["error"]["code"] == "blocked"
    assert not GenerationJob.objects.filter(client_ip__in=["203.0.113.50", "2001:db8:bad:1::7"]).exists()


def test_block_ip_rejects_what_is_not_an_address() -> None:
    with pytest.raises(ApplicationError) as raised:
        block_ip(ip_or_cidr="example.com", reason="")

    assert raised.value.code == "invalid_network"


def test_status_polls_do_not_count_against_the_submit_limit(api_client: APIClient, settings: Any) -> None:
    settings.SUBMIT_RATE = "2/m"
    ip = fresh_window_client("198.51.100.{}")
    job = submit(api_client, ip=ip).json()

    polls = [api_client.get(f"/api/v1/jobs/{job['id']}", REMOTE_ADDR=ip).status_code for _ in range(5)]
    second = submit(api_client, ip=ip)

    assert polls == [200] * 5
    assert second.status_code == 202


def test_status_polls_have_their_own_limit(api_client: APIClient, settings: Any) -> None:
    settings.STATUS_POLL_RATE = "3/m"
    ip = fresh_window_client("198.51.100.{}")
    job = submit(api_client, ip=ip).json()

    polls = [api_client.get(f"/api/v1/jobs/{job['id']}", REMOTE_ADDR=ip) for _ in range(4)]

    assert [poll.status_code for poll in polls] == [200, 200, 200, 429]
    assert polls[-1].json()["error"]["code"] == "rate_limited"
    assert int(polls[-1]["Retry-After"]) >= 1


def test_a_steady_poller_costs_one_redis_round_trip_per_allowance(
    api_client: APIClient, settings: Any
) -> None:
    settings.STATUS_POLL_RATE = "600/m"  # allowances of 600 / 20 = 30 polls
    ip = fresh_window_client("198.51.100.{}")
    url = f"/api/v1/jobs/{submit(api_client, ip=ip).json()['id']}"
    api_client.get(url, REMOTE_ADDR=ip)  # takes the first allowance, and loads the script
    redis = redis_client()
    before = redis_command_calls(redis)

    spent = [api_client.get(url, REMOTE_ADDR=ip).status_code for _ in range(29)]
    after_spending = redis_command_calls(redis)
    api_client.get(url, REMOTE_ADDR=ip)

    assert spent == [200] * 29
    assert after_spending - before == Counter()
    # One EVALSHA; the INCRBY is the script's own, run inside Redis.
    assert redis_command_calls(redis) - after_spending == {"evalsha": 1, "incrby": 1}
    (window,) = redis.scan_iter(match=f"*:rl:job-status:*{ip}*")
    assert int(redis.get(window)) == 60


def test_one_process_refuses_exactly_past_the_limit(api_client: APIClient, settings: Any) -> None:
    settings.STATUS_POLL_RATE = "40/m"  # allowances of 2
    ip = fresh_window_client("198.51.100.{}")
    url = f"/api/v1/jobs/{submit(api_client, ip=ip).json()['id']}"

    polls = [api_client.get(url, REMOTE_ADDR=ip).status_code for _ in range(41)]

    assert polls == [200] * 40 + [429]


def test_allowances_two_threads_take_at_once_are_both_kept(
    api_client: APIClient, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.STATUS_POLL_RATE = "40/m"  # allowances of 2
    ip = fresh_window_client("198.51.100.{}")
    url = f"/api/v1/jobs/{submit(api_client, ip=ip).json()['id']}"
    take = ratelimit_services._take_from_window_script

    def take_while_another_thread_takes(client: Redis) -> Any:
        script = take(client)

        def run(**arguments: Any) -> Any:
            monkeypatch.setattr(ratelimit_services, "_take_from_window_script", take)
            # Another thread's poll of the same client, between this take and its keeping.
            assert api_client.get(url, REMOTE_ADDR=ip).status_code == 200
            return script(**arguments)

        return run

    monkeypatch.setattr(ratelimit_services, "_take_from_window_script", take_while_another_thread_takes)

    polls = [api_client.get(url, REMOTE_ADDR=ip).status_code for _ in range(40)]

    # 2 polls in the two takes, then 38 more: none of the 4 units counted in Redis is lost.
    assert polls == [200] * 39 + [429]


def test_a_client_spread_over_processes_is_refused_at_most_an_allowance_early_per_process(
    api_client: APIClient, settings: Any
) -> None:
    settings.STATUS_POLL_RATE = "40/m"  # allowances of 2
    ip = fresh_window_client("198.51.100.{}")
    url = f"/api/v1/jobs/{submit(api_client, ip=ip).json()['id']}"
    first_process = api_client.get(url, REMOTE_ADDR=ip).status_code  # takes 2, spends 1
    forget_poll_allowances()  # what a second web process holds: nothing

    second_process = [api_client.get(url, REMOTE_ADDR=ip).status_code for _ in range(40)]

    assert first_process == 200
    # 1 + 38 answered: the first process's unspent poll is the only one refused early.
    assert second_process == [200] * 38 + [429] * 2


def redis_command_calls(redis: Redis) -> Counter[str]:
    """Commands Redis has run so far, by name, leaving out INFO (this very reading)."""
    stats = redis.info("commandstats")
    return Counter(
        {
            name.removeprefix("cmdstat_"): stat["calls"]
            for name, stat in stats.items()
            if name != "cmdstat_info"
        }
    )
