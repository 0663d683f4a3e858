"""Every read of abuse control: per-caller usage for operators, the blocklist."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from django.core.cache import cache
from django.db.models import Sum
from django.utils import timezone

from core.redis import redis_client
from core.stored_secrets import decrypt_secret
from ratelimit.client_ip import parse_ip
from ratelimit.models import (
    API_KEY_ACCOUNT_PREFIX,
    MILLIUNITS_PER_UNIT,
    ApiKey,
    BlockedNetwork,
    ClientNetwork,
    ClientUsage,
)

FAILURE_CATEGORIES = ("invalid_prompt", "timeout", "out_of_memory", "inference_error", "worker_lost", "other")
# Failure category -> ClientUsage column.
FAILURE_COLUMNS = {category: f"failed_{category}" for category in FAILURE_CATEGORIES}
UsageOrder = Literal["submitted", "gpu_seconds", "cost_units", "refused"]
REFUSAL_KINDS = (
    "rate_limited",
    "too_many_active_jobs",
    "daily_quota_exceeded",
    "daily_budget_exceeded",
    "blocked",
)


@dataclass
class NetworkUsage:
    network: str
    submitted: int = 0
    completed: int = 0
    gpu_seconds: float = 0.0
    cost_units: Decimal = Decimal(0)
    failures: dict[str, int] = field(default_factory=dict)  # category -> count, non-zero only
    refusals: dict[str, int] = field(default_factory=dict)  # REFUSAL_KINDS -> count, non-zero only
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    blocked_by: list[str] = field(default_factory=list)  # blocklist entries that cover it

    @property
    def is_api_key(self) -> bool:
        return self.network.startswith(API_KEY_ACCOUNT_PREFIX)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def rate_limited(self) -> int:
        return self.refusals.get("rate_limited", 0)

    @property
    def refused(self) -> int:
        return sum(self.refusals.values())


def usage_period_start(*, period: Literal["today", "week"]) -> date:
    """The first UTC day of a period: today, or the last seven days for "week"."""
    today = timezone.now().date()
    return today if period == "today" else today - timedelta(days=6)


def usage_top_networks(*, since: date, order_by: UsageOrder, limit: int = 50) -> list[NetworkUsage]:
    """The client networks with the most jobs, GPU seconds or refused requests since ``since``."""
    refusals = _refusals_since(since=since)
    if order_by == "refused":
        totals = sorted(refusals.items(), key=lambda item: (-sum(item[1].values()), item[0]))
        networks = [network for network, _counts in totals[:limit]]
        rows = _usage_rows(since=since, networks=networks)
        ordered = {network: rows.get(network, NetworkUsage(network=network)) for network in networks}
    else:
        ordered = _usage_rows(since=since, order_by=order_by, limit=limit)
    seen = ClientNetwork.objects.filter(network__in=list(ordered)).values_list(
        "network", "first_seen", "last_seen"
    )
    for network, first_seen, last_seen in seen:
        ordered[network].first_seen, ordered[network].last_seen = first_seen, last_seen
    blocklist = list(BlockedNetwork.objects.values_list("network", flat=True))
    for usage in ordered.values():
        usage.refusals = refusals.get(usage.network, {})
        usage.blocked_by = blocking_entries(network=usage.network, blocklist=blocklist)
    return list(ordered.values())


def usage_of_account(*, account: str, since: date) -> NetworkUsage:
    """One caller's usage (a client network or an API key's account) since ``since``."""
    usage = _usage_rows(since=since, networks=[account]).get(account, NetworkUsage(network=account))
    usage.refusals = _refusals_since(since=since).get(account, {})
    return usage


def blocking_entries(*, network: str, blocklist: Collection[str]) -> list[str]:
    """The blocklist entries that cover all of ``network`` (an address or a CIDR; none for an
    API key's account)."""
    if network.startswith(API_KEY_ACCOUNT_PREFIX):
        return []
    address = parse_ip(network)
    subject = ipaddress.ip_network(address if address is not None else network, strict=False)
    covering = []
    for entry in blocklist:
        blocked = ipaddress.ip_network(entry, strict=False)
        if blocked.version == subject.version and subject.subnet_of(blocked):  # type: ignore[arg-type]
            covering.append(entry)
    return covering


def _usage_rows(
    *,
    since: date,
    networks: Collection[str] | None = None,
    order_by: UsageOrder | None = None,
    limit: int | None = None,
) -> dict[str, NetworkUsage]:
    rows = ClientUsage.objects.filter(day__gte=since)
    if networks is not None:
        rows = rows.filter(network__in=list(networks))
    sums = rows.values("network").annotate(
        total_submitted=Sum("submitted"),
        total_completed=Sum("completed"),
        total_gpu_seconds=Sum("gpu_seconds"),
        total_cost_milliunits=Sum("cost_milliunits"),
        **{f"total_{column}": Sum(column) for column in FAILURE_COLUMNS.values()},
    )
    if order_by is not None:
        column = "cost_milliunits" if order_by == "cost_units" else order_by
        sums = sums.order_by(f"-total_{column}", "network")
    if limit is not None:
        sums = sums[:limit]
    return {row["network"]: _network_usage(row) for row in sums}


def _network_usage(row: Mapping[str, Any]) -> NetworkUsage:
    return NetworkUsage(
        network=row["network"],
        submitted=row["total_submitted"],
        completed=row["total_completed"],
        gpu_seconds=row["total_gpu_seconds"],
        cost_units=Decimal(row["total_cost_milliunits"]) / MILLIUNITS_PER_UNIT,
        failures={
            category: row[f"total_{column}"]
            for category, column in FAILURE_COLUMNS.items()
            if row[f"total_{column}"]
        },
    )


def refusal_counter_key(*, day: date) -> str:
    return cache.make_key(f"usage:refusals:{day.isoformat()}")


def _refusals_since(*, since: date) -> dict[str, dict[str, int]]:
    today = timezone.now().date()
    pipeline = redis_client().pipeline()
    for offset in range((today - since).days + 1):
        pipeline.hgetall(refusal_counter_key(day=since + timedelta(days=offset)))
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for day_counts in pipeline.execute():
        for counter, raw_count in day_counts.items():
            kind, _, network = counter.partition("|")
            if kind in REFUSAL_KINDS:
                counts[network][kind] = counts[network].get(kind, 0) + int(raw_count)
    return dict(counts)


def api_key_webhook_secrets(*, api_key: ApiKey) -> list[str]:
    """The secrets that sign this key's webhook deliveries now: its own, and the previous one
    while a rotation's overlap lasts. Empty for a key made before keys had their own."""
    live = [api_key.webhook_secret_encrypted]
    until = api_key.previous_webhook_secret_until
    if until is not None and until > timezone.now():
        live.append(api_key.previous_webhook_secret_encrypted)
    return [decrypt_secret(token) for token in live if token]
