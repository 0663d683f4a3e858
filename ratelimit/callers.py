"""Who is submitting: an API key or an anonymous client network, decided once per request and
passed to the services as a value, with the policy that applies to it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from django.conf import settings

from ratelimit.client_ip import client_network, parse_ip
from ratelimit.models import ApiKey


@dataclass(frozen=True, kw_only=True)
class CallerPolicy:
    submit_rate: str  # django-ratelimit's "count/period"
    max_active_jobs: int  # 0 = no limit, as for every number below
    daily_quota_jobs: int
    daily_budget_units: int
    max_job_units: int
    weight: float  # share of served compute in the fair queue
    aggregate_max_active_jobs: int = 0  # held by the widest aggregate network as a whole


@dataclass(frozen=True, kw_only=True)
class Caller:
    client_ip: str
    # What limits, usage and queue turns count under: a client network, or "key:<prefix>".
    account: str
    policy: CallerPolicy
    api_key_id: int | None = None
    # Wider networks that hold the same rate, quota and budget limits in aggregate.
    aggregates: tuple[str, ...] = ()

    @property
    def queue_account(self) -> str:
        """What the fair queue and the aggregate active-job limit count this caller under: its
        widest aggregate network, so the /64s of one allocation take one turn between them."""
        return self.aggregates[-1] if self.aggregates else self.account


def anonymous_caller(client_ip: str) -> Caller:
    return Caller(
        client_ip=client_ip,
        account=client_network(client_ip),
        aggregates=aggregate_networks(client_ip),
        policy=CallerPolicy(
            submit_rate=settings.SUBMIT_RATE,
            max_active_jobs=settings.SUBMIT_MAX_ACTIVE_JOBS,
            daily_quota_jobs=settings.SUBMIT_DAILY_QUOTA,
            daily_budget_units=settings.ANON_DAILY_BUDGET_UNITS,
            max_job_units=settings.ANON_MAX_JOB_UNITS,
            weight=1.0,
            aggregate_max_active_jobs=settings.ANON_AGGREGATE_MAX_ACTIVE_JOBS,
        ),
    )


def api_key_caller(api_key: ApiKey, *, client_ip: str) -> Caller:
    def chosen(value: int | None, default: int) -> int:
        return default if value is None else value

    return Caller(
        client_ip=client_ip,
        account=api_key.account,
        api_key_id=api_key.pk,
        policy=CallerPolicy(
            submit_rate=api_key.submit_rate or settings.API_KEY_DEFAULT_SUBMIT_RATE,
            max_active_jobs=chosen(api_key.max_active_jobs, settings.API_KEY_DEFAULT_MAX_ACTIVE_JOBS),
            daily_quota_jobs=0,
            daily_budget_units=chosen(
                api_key.daily_budget_units, settings.API_KEY_DEFAULT_DAILY_BUDGET_UNITS
            ),
            max_job_units=chosen(api_key.max_job_units, settings.API_KEY_DEFAULT_MAX_JOB_UNITS),
            weight=api_key.weight or settings.API_KEY_DEFAULT_WEIGHT,
        ),
    )


def aggregate_networks(ip: str) -> tuple[str, ...]:
    """The wider networks ``ip`` is also limited as (``ANON_AGGREGATE_PREFIXES_V6``/``_V4``),
    narrowest first, leaving out any not wider than the client network itself."""
    address = parse_ip(ip)
    if address is None:
        return ()
    if address.version == 6:
        own, prefixes = settings.CLIENT_IP_IPV6_PREFIX, settings.ANON_AGGREGATE_PREFIXES_V6
    else:
        own, prefixes = 32, settings.ANON_AGGREGATE_PREFIXES_V4
    return tuple(
        str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
        for prefix in sorted(set(prefixes), reverse=True)
        if prefix < own
    )
