"""Every write of abuse control: admitting a submission, counting usage, the blocklist.

Limits are keyed by the client network (``ratelimit.client_ip.client_network``), never by
the raw ``X-Forwarded-For``, and their state lives in Redis or the database, so they hold
across web processes and restarts.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any, NoReturn

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone
from django_ratelimit.core import get_usage

from core.errors import ApplicationError
from core.logging import log_event
from core.redis import redis_client
from ops.metrics import record_rate_limit_hit
from ratelimit.client_ip import client_network, normalise_network, parse_ip
from ratelimit.models import BlockedNetwork, ClientNetwork, ClientUsage
from ratelimit.selectors import refusal_counter_key

logger = logging.getLogger(__name__)

SUBMIT_GROUP = "job-submit"
STATUS_POLL_GROUP = "job-status"
# Refusal counters are kept long enough for the admin's "this week" view.
REFUSAL_COUNTER_TTL_SECONDS = 8 * 24 * 3600
# Only a hint: when the job finishes is unknown here; its status URL says exactly.
ACTIVE_JOB_RETRY_AFTER_SECONDS = 5


@contextmanager
def submission_admitted(
    *,
    client_ip: str,
    count_active_jobs: Callable[[str], int],
    check_after_limits: Callable[[], None] | None = None,
) -> Iterator[str]:
    """Refuses a submission that breaks a limit (an ``ApplicationError``), else opens the transaction
    the job must be written in and yields the client network to store on it.
    ``count_active_jobs(network)`` is the caller's count of that network's queued or running jobs.
    ``check_after_limits`` runs once the blocklist and rate limit let the client through, before
    the transaction: a slow check (a webhook host's name lookup) that a refused client never
    reaches and that holds no lock while it waits.

    The active-job and daily-quota checks run in that same transaction after locking the
    network's ``ClientNetwork`` row, so two concurrent submits from one network are admitted
    one after the other and cannot both slip through (PostgreSQL: the UPDATE's row lock;
    SQLite: IMMEDIATE transactions serialise writers anyway).
    """
    network = client_network(client_ip)
    _refuse_if_blocked(client_ip=client_ip, network=network)
    _refuse_if_over_rate(network=network)
    if check_after_limits is not None:
        check_after_limits()
    with transaction.atomic():
        _lock_client_network(network=network)
        _refuse_if_too_many_active(network=network, count_active_jobs=count_active_jobs)
        _count_submission(network=network)
        yield network


def enforce_status_poll_limit(*, client_ip: str) -> None:
    """Status reads have their own, generous limit, so polling never uses up submissions."""
    network = client_network(client_ip)
    retry_after = _rate_limit_hit(group=STATUS_POLL_GROUP, rate=settings.STATUS_POLL_RATE, network=network)
    if retry_after is not None:
        record_rate_limit_hit(rule="status_poll_rate_limited")
        raise ApplicationError(
            code="rate_limited",
            message=f"Too many status requests: try again in {retry_after} seconds.",
            retry_after=retry_after,
        )


def usage_record_job_finished(
    *, network: str, failure_code: str, started_at: datetime | None, finished_at: datetime
) -> None:
    """Counts a completed (``failure_code`` empty) or failed job and its run time; called in
    the transaction that finishes the job, so the counters match the jobs exactly."""
    if not failure_code:
        field = "completed"
    elif _is_usage_field(f"failed_{failure_code}"):
        field = f"failed_{failure_code}"
    else:
        field = "failed_other"
    run_seconds = (finished_at - started_at).total_seconds() if started_at else 0.0
    _bump_usage(
        network=network,
        day=finished_at.date(),
        **{field: models.F(field) + 1, "gpu_seconds": models.F("gpu_seconds") + run_seconds},
    )


def block_ip(*, ip_or_cidr: str, reason: str = "") -> BlockedNetwork:
    """Blocks an address or CIDR from submitting; blocking it again only updates the reason."""
    network = _normalised_or_error(ip_or_cidr)
    blocked, _created = BlockedNetwork.objects.update_or_create(network=network, defaults={"reason": reason})
    log_event(logger.info, "blocked", network=network, reason=reason)
    return blocked


def unblock_ip(*, ip_or_cidr: str) -> bool:
    """Removes this exact blocklist entry; returns whether there was one."""
    deleted, _ = BlockedNetwork.objects.filter(network=_normalised_or_error(ip_or_cidr)).delete()
    if deleted:
        log_event(logger.info, "unblocked", network=ip_or_cidr)
    return bool(deleted)


def _normalised_or_error(ip_or_cidr: str) -> str:
    try:
        return normalise_network(ip_or_cidr)
    except ValueError:
        raise ApplicationError(
            code="invalid_network", message=f"{ip_or_cidr!r} is not an IP address or a CIDR."
        ) from None


def _refuse_if_blocked(*, client_ip: str, network: str) -> None:
    address = parse_ip(client_ip)
    for entry in BlockedNetwork.objects.values_list("network", flat=True):
        if address is not None and address in ipaddress.ip_network(entry, strict=False):
            _refuse(code="blocked", network=network, message="This address may not submit jobs.")


def _refuse_if_over_rate(*, network: str) -> None:
    retry_after = _rate_limit_hit(group=SUBMIT_GROUP, rate=settings.SUBMIT_RATE, network=network)
    if retry_after is not None:
        _refuse(
            code="rate_limited",
            network=network,
            message=f"Too many submissions: try again in {retry_after} seconds.",
            retry_after=retry_after,
        )


def _rate_limit_hit(*, group: str, rate: str, network: str) -> int | None:
    """Counts one request in django-ratelimit's window for ``network``; the seconds left in
    the window if it is over ``rate``, else None.

    django-ratelimit reads a request only to derive the key and match the method. The key is
    already decided here (a callable returning the client network, so every face and every
    web process share one counter) and every method counts, so no request is needed and the
    limit can be enforced in the one service every face calls.
    """
    usage = get_usage(None, group=group, key=lambda _group, _request: network, rate=rate, increment=True)
    if usage is None or not usage["should_limit"]:
        return None
    return max(1, int(usage["time_left"]))


def _lock_client_network(*, network: str) -> None:
    now = timezone.now()
    _update_or_insert(
        ClientNetwork.objects.filter(network=network),
        ClientNetwork(network=network, first_seen=now, last_seen=now),
        last_seen=now,
    )


def _refuse_if_too_many_active(*, network: str, count_active_jobs: Callable[[str], int]) -> None:
    limit = settings.SUBMIT_MAX_ACTIVE_JOBS
    if not limit:
        return
    active = count_active_jobs(network)
    if active >= limit:
        _refuse(
            code="too_many_active_jobs",
            network=network,
            message=f"You already have {active} job(s) queued or running: wait for one to finish.",
            retry_after=ACTIVE_JOB_RETRY_AFTER_SECONDS,
        )


def _count_submission(*, network: str) -> None:
    today = timezone.now().date()
    quota = settings.SUBMIT_DAILY_QUOTA
    if quota:
        submitted = (
            ClientUsage.objects.filter(network=network, day=today).values_list("submitted", flat=True).first()
        )
        if (submitted or 0) >= quota:
            tomorrow = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
            _refuse(
                code="daily_quota_exceeded",
                network=network,
                message=f"The daily quota of {quota} jobs is used up: it resets at midnight UTC.",
                retry_after=max(1, int((tomorrow - timezone.now()).total_seconds())),
            )
    _bump_usage(network=network, day=today, submitted=models.F("submitted") + 1)


def _bump_usage(*, network: str, day: date, **changes: Any) -> None:
    _update_or_insert(
        ClientUsage.objects.filter(network=network, day=day), ClientUsage(network=network, day=day), **changes
    )


def _update_or_insert(rows: models.QuerySet[Any], missing: models.Model, **changes: Any) -> None:
    """UPDATEs ``rows``, inserting ``missing`` first if there are none. A concurrent first
    insert is ignored rather than failing the transaction, and the UPDATE holds the row's
    lock until commit (PostgreSQL), which is what serialises one network's submissions."""
    if not rows.update(**changes):
        type(missing)._default_manager.bulk_create([missing], ignore_conflicts=True)
        rows.update(**changes)


def _refuse(*, code: str, network: str, message: str, retry_after: int | None = None) -> NoReturn:
    # Counted in Redis, not the database: refusals come in floods, and one HINCRBY costs nothing.
    key = refusal_counter_key(day=timezone.now().date())
    pipeline = redis_client().pipeline()
    pipeline.hincrby(key, f"{code}|{network}", 1)
    pipeline.expire(key, REFUSAL_COUNTER_TTL_SECONDS)
    pipeline.execute()
    record_rate_limit_hit(rule=code)
    raise ApplicationError(code=code, message=message, retry_after=retry_after)


def _is_usage_field(name: str) -> bool:
    return any(field.name == name for field in ClientUsage._meta.get_fields())
