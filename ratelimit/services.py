"""Every write of abuse control: admitting a submission, counting usage, the blocklist.

Limits are keyed by the client network (``ratelimit.client_ip.client_network``), never by
the raw ``X-Forwarded-For``, and their state lives in Redis or the database, so they hold
across web processes and restarts.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple, NoReturn

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import models, transaction
from django.db.models.functions import Greatest
from django.utils import timezone

# _get_window: the poll limit counts in the same windows as django-ratelimit's submit limit.
from django_ratelimit.core import _get_window, get_usage

from core.errors import ApplicationError
from core.logging import log_event
from core.redis import redis_client
from core.stored_secrets import encrypt_secret, new_webhook_secret
from ops.metrics import record_rate_limit_hit
from ratelimit.callers import Caller, CallerPolicy, aggregate_networks
from ratelimit.client_ip import client_network, normalise_network, parse_ip
from ratelimit.models import MILLIUNITS_PER_UNIT, ApiKey, BlockedNetwork, ClientNetwork, ClientUsage
from ratelimit.selectors import refusal_counter_key

logger = logging.getLogger(__name__)

SUBMIT_GROUP = "job-submit"
STATUS_POLL_GROUP = "job-status"
# Refusal counters are kept long enough for the admin's "this week" view.
REFUSAL_COUNTER_TTL_SECONDS = 8 * 24 * 3600
# Only a hint: when the job finishes is unknown here; its status URL says exactly.
ACTIVE_JOB_RETRY_AFTER_SECONDS = 5
API_KEY_PREFIX_BYTES = 4
API_KEY_SECRET_BYTES = 32
API_KEY_PATTERN = re.compile(r"ig_(?P<prefix>[0-9a-f]{8})_[A-Za-z0-9_-]{43}")
# last_used_at is for support, not audit: one write a minute per key is precise enough.
API_KEY_LAST_USED_RESOLUTION_SECONDS = 60


@contextmanager
def submission_admitted(
    *,
    caller: Caller,
    cost_units: Decimal,
    count_active_jobs: Callable[[str], int],
    check_after_limits: Callable[[], None] | None = None,
) -> Iterator[str]:
    """Refuses a submission that breaks a limit of ``caller`` (an ``ApplicationError``), else
    opens the transaction the job must be written in and yields the account to store on it.
    ``count_active_jobs(account)`` is the caller's count of queued or running jobs of that
    account or aggregate (``Caller.queue_account``).
    ``check_after_limits`` runs once the blocklist and rate limit let the caller through, before
    the transaction: a slow check (a webhook host's name lookup) that a refused caller never
    reaches and that holds no lock while it waits.

    The active-job checks (the account's, and its widest aggregate's) run in that same
    transaction after locking their ``ClientNetwork`` rows, aggregate first, so two concurrent
    submits of one caller or one aggregate are admitted one after the other (PostgreSQL: the
    UPDATE's row lock; SQLite: IMMEDIATE transactions serialise writers).
    The daily budget is reserved by a conditional UPDATE of the day's usage row, so concurrent
    submits can never spend more than it, whatever the interleaving.
    """
    policy = caller.policy
    if policy.max_job_units and cost_units > policy.max_job_units:
        raise ApplicationError(
            code="job_too_expensive",
            message=(
                f"This job costs {cost_units} compute units; the most one job may cost is "
                f"{policy.max_job_units}. Ask for fewer pixels, steps or images."
            ),
            extra={"cost_units": float(cost_units), "max_job_units": policy.max_job_units},
        )
    _refuse_if_blocked(client_ip=caller.client_ip, network=caller.account)
    for account in (caller.account, *caller.aggregates):
        _refuse_if_over_rate(network=account, rate=policy.submit_rate)
    if check_after_limits is not None:
        check_after_limits()
    with transaction.atomic():
        aggregate = caller.queue_account if caller.queue_account != caller.account else None
        if aggregate is not None:
            _lock_client_network(network=aggregate)
        _lock_client_network(network=caller.account)
        _refuse_if_too_many_active(
            network=caller.account, limit=policy.max_active_jobs, count_active_jobs=count_active_jobs
        )
        if aggregate is not None:
            _refuse_if_too_many_active(
                network=aggregate, limit=policy.aggregate_max_active_jobs, count_active_jobs=count_active_jobs
            )
        for account in (caller.account, *caller.aggregates):
            _count_submission(network=account, policy=policy, cost_units=cost_units)
        yield caller.account


def enforce_status_poll_limit(*, client_ip: str) -> None:
    """Status reads have their own, generous limit, so polling never uses up submissions.

    Polls are the hottest request there is, so they are counted by a Lua script, in allowances,
    rather than through django-ratelimit, whose Django cache calls take three round trips a poll.
    """
    retry_after = _poll_window_hit(network=client_network(client_ip), rate=settings.STATUS_POLL_RATE)
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


def usage_refund_unstarted_job(
    *, account: str, client_ip: str, anonymous: bool, submitted_on: date, cost_units: Decimal
) -> None:
    """Gives a job's reserved cost back to the usage rows its submit charged on ``submitted_on``
    (the account's and, for an anonymous client, its aggregate networks'): a job that ended
    before it started spent no compute. Called by the one writer whose guarded transition ended
    the job, so a job is refunded at most once. A row never goes below zero."""
    milliunits = int(cost_units * MILLIUNITS_PER_UNIT)
    networks = (account, *(aggregate_networks(client_ip) if anonymous else ()))
    ClientUsage.objects.filter(network__in=networks, day=submitted_on).update(
        cost_milliunits=Greatest(models.F("cost_milliunits") - milliunits, 0)
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


class IssuedApiKey(NamedTuple):
    """A key as made or re-made: its row, and the secrets shown this once and never again."""

    api_key: ApiKey
    key: str
    webhook_secret: str


def api_key_create(*, name: str, **policy: Any) -> IssuedApiKey:
    """A new key, its plain text (stored only hashed) and its own webhook signing secret (stored
    encrypted), both shown once. Raises Django's ValidationError for a policy the model does not
    accept."""
    prefix = secrets.token_hex(API_KEY_PREFIX_BYTES)
    plain = _new_plain_key(prefix)
    webhook_secret = new_webhook_secret()
    api_key = ApiKey(
        name=name,
        prefix=prefix,
        secret_hash=_key_hash(plain),
        webhook_secret_encrypted=encrypt_secret(webhook_secret),
        **policy,
    )
    api_key.full_clean()
    api_key.save()
    log_event(logger.info, "api_key_created", api_key=prefix, name=name)
    return IssuedApiKey(api_key=api_key, key=plain, webhook_secret=webhook_secret)


def api_key_rotate(*, api_key: ApiKey) -> str:
    """A new secret for the key, which keeps its prefix, policy and usage; the old one stops working."""
    plain = _new_plain_key(api_key.prefix)
    api_key.secret_hash, api_key.rotated_at = _key_hash(plain), timezone.now()
    api_key.save(update_fields=["secret_hash", "rotated_at", "updated_at"])
    log_event(logger.info, "api_key_rotated", api_key=api_key.prefix)
    return plain


def api_key_rotate_webhook_secret(*, api_key: ApiKey, overlap_seconds: int | None = None) -> str:
    """A new webhook secret for the key, shown once. For ``overlap_seconds`` (default
    ``WEBHOOK_SECRET_ROTATION_OVERLAP_SECONDS``) deliveries carry the old signature too, so
    its receiver can switch without refusing an event; a key without one just gets one."""
    overlap = settings.WEBHOOK_SECRET_ROTATION_OVERLAP_SECONDS if overlap_seconds is None else overlap_seconds
    webhook_secret = new_webhook_secret()
    now = timezone.now()
    previous = api_key.webhook_secret_encrypted if overlap > 0 else ""
    api_key.previous_webhook_secret_encrypted = previous
    api_key.previous_webhook_secret_until = now + timedelta(seconds=overlap) if previous else None
    api_key.webhook_secret_encrypted = encrypt_secret(webhook_secret)
    api_key.webhook_secret_rotated_at = now
    api_key.save(
        update_fields=[
            "webhook_secret_encrypted",
            "previous_webhook_secret_encrypted",
            "previous_webhook_secret_until",
            "webhook_secret_rotated_at",
            "updated_at",
        ]
    )
    log_event(logger.info, "api_key_webhook_secret_rotated", api_key=api_key.prefix, overlap_seconds=overlap)
    return webhook_secret


def api_key_revoke(*, api_key: ApiKey) -> None:
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    log_event(logger.info, "api_key_revoked", api_key=api_key.prefix)


def api_key_authenticate(*, plain: str) -> ApiKey:
    """The key ``plain`` names, if it is live; an ``invalid_api_key`` or ``api_key_revoked``
    ApplicationError otherwise. Records the use at most once a minute per key."""
    match = API_KEY_PATTERN.fullmatch(plain)
    api_key = ApiKey.objects.filter(prefix=match["prefix"]).first() if match else None
    if api_key is None or not hmac.compare_digest(api_key.secret_hash, _key_hash(plain)):
        raise ApplicationError(code="invalid_api_key", message="The API key is malformed or unknown.")
    if api_key.revoked_at is not None:
        raise ApplicationError(code="api_key_revoked", message="This API key was revoked.")
    now = timezone.now()
    stale = now - timedelta(seconds=API_KEY_LAST_USED_RESOLUTION_SECONDS)
    if api_key.last_used_at is None or api_key.last_used_at < stale:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


def _new_plain_key(prefix: str) -> str:
    return f"ig_{prefix}_{secrets.token_urlsafe(API_KEY_SECRET_BYTES)}"


def _key_hash(plain: str) -> str:
    # A fast hash is enough: the secret has 256 random bits, so there is nothing to brute-force,
    # and a slow hash would cost every API request its time.
    return hashlib.sha256(plain.encode()).hexdigest()


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


def _refuse_if_over_rate(*, network: str, rate: str) -> None:
    retry_after = _rate_limit_hit(group=SUBMIT_GROUP, rate=rate, network=network)
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


# INCRBY and, on a window's first take, EXPIRE, atomically: one round trip per allowance.
_TAKE_FROM_WINDOW = """
local count = redis.call('INCRBY', KEYS[1], ARGV[2])
if count == tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""
_PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# A process takes a window's polls from Redis this fraction of the limit at a time.
_POLL_ALLOWANCES_PER_WINDOW = 20


@dataclass
class _PollAllowance:
    window_key: str
    limit: int
    window_end: float
    left: int | None  # polls this process may still answer; None: the window is spent


class _PollAllowances:
    """This process's allowances by client network, shared by its threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_network: dict[str, _PollAllowance] = {}
        self._prune_after = 0.0

    def current(self, network: str, window_key: str, limit: int) -> _PollAllowance | None:
        """``network``'s allowance for this window and limit, if this process holds one."""
        held = self.by_network.get(network)
        return held if held is not None and (held.window_key, held.limit) == (window_key, limit) else None

    def hold(self, network: str, allowance: _PollAllowance) -> None:
        """Keeps ``allowance``; at most once a second, drops those whose window has ended, so
        the table holds one window's clients. Called with the lock held."""
        self.by_network[network] = allowance
        now = time.time()
        if now >= self._prune_after:
            self._prune_after = now + 1
            for ended in [name for name, held in self.by_network.items() if held.window_end <= now]:
                del self.by_network[ended]


_poll_allowances = _PollAllowances()


def _poll_window_hit(*, network: str, rate: str) -> int | None:
    """Counts one status read in ``network``'s window of ``rate`` ("600/m", "100/10s"); the
    seconds left in the window if it is over the rate, else None. The windows are
    django-ratelimit's (fixed, offset per client), as the submit limit's are.

    Polls are the hottest request there is, so a web process takes them from the window's Redis
    counter an allowance (a twentieth of the limit) at a time and spends it locally: a steady
    poller costs one round trip per allowance. The price: a client whose polls reach several web
    processes may be refused up to an allowance per process early, never late.
    """
    limit_text, period = rate.split("/")
    limit = int(limit_text)
    period_seconds = int(period[:-1] or 1) * _PERIOD_SECONDS[period[-1]]
    window_end = _get_window(network, period_seconds)
    key = cache.make_key(f"rl:{STATUS_POLL_GROUP}:{period_seconds}:{network}:{window_end}")
    seconds_left = max(1, math.ceil(window_end - time.time()))
    with _poll_allowances.lock:
        held = _poll_allowances.current(network, key, limit)
        if held is not None:
            if held.left is None:
                return seconds_left
            if held.left > 0:
                held.left -= 1
                return None
    allowance = max(1, limit // _POLL_ALLOWANCES_PER_WINDOW)
    count = _take_from_window_script(redis_client())(keys=[key], args=[seconds_left + 1, allowance])
    granted = max(0, min(allowance, limit - (count - allowance)))
    with _poll_allowances.lock:
        # Another thread of this process may have taken an allowance meanwhile: keep both.
        held = _poll_allowances.current(network, key, limit)
        available = granted + ((held.left or 0) if held is not None else 0)
        left = available - 1 if available > 0 else None
        _poll_allowances.hold(network, _PollAllowance(key, limit, window_end, left))
    return None if available > 0 else seconds_left


def forget_poll_allowances() -> None:
    """Drops this process's unspent poll allowances: after the Redis windows were emptied."""
    with _poll_allowances.lock:
        _poll_allowances.by_network.clear()


@functools.cache
def _take_from_window_script(client: redis.Redis) -> Any:
    return client.register_script(_TAKE_FROM_WINDOW)


def _lock_client_network(*, network: str) -> None:
    now = timezone.now()
    _update_or_insert(
        ClientNetwork.objects.filter(network=network),
        ClientNetwork(network=network, first_seen=now, last_seen=now),
        last_seen=now,
    )


def _refuse_if_too_many_active(*, network: str, limit: int, count_active_jobs: Callable[[str], int]) -> None:
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


def _count_submission(*, network: str, policy: CallerPolicy, cost_units: Decimal) -> None:
    """Counts the job and reserves its cost in the day's usage row, only while the quota and the
    budget hold: the conditions and the write are one UPDATE, exact under concurrency."""
    today = timezone.now().date()
    quota, budget = policy.daily_quota_jobs, policy.daily_budget_units
    milliunits = int(cost_units * MILLIUNITS_PER_UNIT)
    ClientUsage.objects.bulk_create([ClientUsage(network=network, day=today)], ignore_conflicts=True)
    rows = ClientUsage.objects.filter(network=network, day=today)
    within_limits = rows
    if quota:
        within_limits = within_limits.filter(submitted__lt=quota)
    if budget:
        within_limits = within_limits.filter(cost_milliunits__lte=budget * MILLIUNITS_PER_UNIT - milliunits)
    if within_limits.update(
        submitted=models.F("submitted") + 1, cost_milliunits=models.F("cost_milliunits") + milliunits
    ):
        return
    if quota and (rows.values_list("submitted", flat=True).first() or 0) >= quota:
        _refuse(
            code="daily_quota_exceeded",
            network=network,
            message=f"The daily quota of {quota} jobs is used up: it resets at midnight UTC.",
            retry_after=_seconds_to_midnight(today),
        )
    _refuse(
        code="daily_budget_exceeded",
        network=network,
        message=(
            f"The daily budget of {budget} compute units has no room for this job "
            f"({cost_units} units): it resets at midnight UTC."
        ),
        retry_after=_seconds_to_midnight(today),
    )


def _seconds_to_midnight(today: date) -> int:
    tomorrow = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return max(1, int((tomorrow - timezone.now()).total_seconds()))


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
