"""Every write to webhook deliveries: check a subscription, record an event, attempt, re-send.

A webhook never fails a job: events are recorded after the job's own transaction commits,
with errors logged and swallowed, and delivery problems end in the delivery's own status.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from urllib.parse import urlsplit

import redis
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from core.errors import ApplicationError, FieldError, invalid_parameters
from core.logging import log_event
from core.redis import redis_client
from ops.metrics import record_webhook_resends
from webhooks import selectors, transport
from webhooks.addresses import ForbiddenDestination, check_destination, parse_destination
from webhooks.models import AttemptError, DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEvent
from webhooks.signing import signature_header

logger = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
USER_AGENT = "imagegen-webhooks/1"
# Retrying cannot help: the receiver asked us to stop, or the address is one we never call.
FINAL_ERRORS = (AttemptError.GONE, AttemptError.FORBIDDEN_ADDRESS)
# Celery stops an attempt's task at these limits. A claim on an attempt outlives the hard one,
# so a claim still held after it belongs to a worker that died and may be taken over.
ATTEMPT_SOFT_TIME_LIMIT = 60
ATTEMPT_TIME_LIMIT = 90
ATTEMPT_CLAIM_SECONDS = ATTEMPT_TIME_LIMIT + 30
# For clocks and ETA precision: a message this early is on time, an earlier one is a hop.
DUE_SLACK = timedelta(seconds=1)
# A backlog of lost messages (Redis restarted empty under load) is re-sent over a few runs
# instead of flooding the broker at once.
SWEEP_MAX_PER_RUN = 500
# An attempt whose host already has WEBHOOK_HOST_CONCURRENCY attempts in flight waits this long
# (jittered upwards), then tries again; it is not counted as an attempt.
HOST_BUSY_RETRY_SECONDS = 5.0


def webhook_url_forbidden(reason: str) -> ApplicationError:
    message = f"This webhook URL is not allowed. {reason}"
    return ApplicationError(
        code="webhook_url_forbidden",
        message=message,
        fields={"webhook_url": [FieldError(code="webhook_url_forbidden", message=message)]},
    )


def webhook_subscription_clean(*, url: str, events: Sequence[str] | None) -> tuple[str, list[str]]:
    """The webhook URL and events to store on a new job (events default to all of them).

    Raises a ``validation_error`` ApplicationError for unknown events or an overlong URL, and a
    ``webhook_url_forbidden`` one for a URL this service may never call (see webhooks.addresses).
    Its host is not looked up here: ``webhook_destination_check`` does that, after admission.
    """
    wanted = WebhookEvent.values if events is None else list(events)
    unknown = sorted(set(wanted) - set(WebhookEvent.values))
    if unknown:
        message = f"Unknown events {', '.join(unknown)}; use {', '.join(WebhookEvent.values)}."
        raise invalid_parameters(
            {"webhook_events": [FieldError(code="webhook_event_unknown", message=message)]}
        )
    if not url:
        return "", []
    if len(url) > MAX_URL_LENGTH:
        message = f"Use at most {MAX_URL_LENGTH} characters."
        raise invalid_parameters({"webhook_url": [FieldError(code="webhook_url_too_long", message=message)]})
    try:
        parse_destination(url, allow_http=settings.WEBHOOK_ALLOW_HTTP)
    except ForbiddenDestination as error:
        raise webhook_url_forbidden(error.public_message) from None
    return url, [event for event in WebhookEvent.values if event in wanted]


def webhook_destination_check(*, url: str) -> None:
    """Resolves a webhook URL's host within ``WEBHOOK_DNS_TIMEOUT_SECONDS`` and refuses it when
    an address is not public, with a ``webhook_url_forbidden`` ApplicationError that never
    names the address (the log does). Call it only for an admitted client: it may wait."""
    try:
        check_destination(
            url,
            allow_http=settings.WEBHOOK_ALLOW_HTTP,
            allow_private=settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS,
            timeout=settings.WEBHOOK_DNS_TIMEOUT_SECONDS,
        )
    except ForbiddenDestination as error:
        log_event(logger.info, "webhook_url_refused", reason=str(error))
        raise webhook_url_forbidden(error.public_message) from None
    except TimeoutError as error:
        log_event(logger.info, "webhook_url_refused", reason=str(error))
        raise webhook_url_forbidden("Its host name did not resolve in time.") from None
    except OSError as error:
        log_event(logger.info, "webhook_url_refused", reason=str(error))
        raise webhook_url_forbidden("Its host name does not resolve.") from None


def receiver_secrets_register(lookup: Callable[[uuid.UUID | str], Sequence[str]]) -> None:
    """How to find the secrets of a job's receiver (its API key's, or the job's own); the jobs
    app registers it at start, since this app knows no jobs."""
    global _receiver_secrets
    _receiver_secrets = lookup


_receiver_secrets: Callable[[uuid.UUID | str], Sequence[str]] | None = None


def delivery_signing_secrets(delivery: WebhookDelivery) -> Sequence[str]:
    """The receiver's own secrets, read at each attempt so a rotation applies to retries too;
    ``WEBHOOK_SECRETS`` only for a receiver that has none (from before receivers had their own)."""
    own = _receiver_secrets(delivery.job_id) if _receiver_secrets is not None else ()
    return own or settings.WEBHOOK_SECRETS


def webhook_delivery_create(*, job_id: uuid.UUID | str, url: str, event: str, data: object) -> None:
    """Records the delivery of ``event`` with the job's status shape ``data`` and sends its first
    attempt; the jobs app calls it once the job's transaction has committed. The signed payload
    names its destination, so a receiver can refuse an event replayed to it from another."""
    now = timezone.now()
    payload = {
        "type": f"job.{event}",
        "timestamp": now.isoformat().replace("+00:00", "Z"),
        "webhook_url": url,
        "data": data,
    }
    delivery = WebhookDelivery.objects.create(
        job_id=job_id,
        event=event,
        url=url,
        webhook_id=f"msg_{uuid.uuid4().hex}",
        payload=json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":")),
        next_attempt_at=now,
    )
    log_event(logger.info, "webhook_recorded", job=job_id, webhook=delivery.webhook_id, type=f"job.{event}")
    _send_attempt(delivery_id=delivery.pk, attempt=1, countdown=0.0)


def _send_attempt(*, delivery_id: int, attempt: int, countdown: float) -> bool:
    """Sends the message for attempt number ``attempt``; False when the broker is unreachable.

    A delivery whose message was not sent stays pending, and the sweep sends it once overdue.
    """
    from webhooks.tasks import deliver_webhook_task

    # Redis hands a message that waits unacknowledged longer than its visibility timeout to
    # another worker; a longer wait is made of shorter hops (see webhook_delivery_attempt).
    longest = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] / 2
    try:
        deliver_webhook_task.apply_async(
            kwargs={"delivery_id": delivery_id, "attempt": attempt}, countdown=min(countdown, longest)
        )
    except KombuOperationalError:
        log_event(logger.exception, "webhook_send_failed", webhook_delivery=delivery_id, attempt=attempt)
        return False
    return True


@dataclass(frozen=True)
class AttemptResult:
    response_status: int | None
    error: str
    error_message: str

    @property
    def succeeded(self) -> bool:
        return not self.error


def _post(delivery: WebhookDelivery) -> AttemptResult:
    body = delivery.payload.encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(
            secrets=delivery_signing_secrets(delivery),
            webhook_id=delivery.webhook_id,
            timestamp=timestamp,
            body=body,
        ),
    }
    try:
        status = transport.post(
            url=delivery.url,
            body=body,
            headers=headers,
            timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
            dns_timeout=settings.WEBHOOK_DNS_TIMEOUT_SECONDS,
            allow_http=settings.WEBHOOK_ALLOW_HTTP,
            allow_private=settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS,
        )
    except ForbiddenDestination as error:
        return AttemptResult(
            response_status=None, error=AttemptError.FORBIDDEN_ADDRESS, error_message=str(error)
        )
    except transport.DeliveryFailed as error:
        return AttemptResult(response_status=None, error=error.code, error_message=str(error))
    except SoftTimeLimitExceeded:
        return AttemptResult(
            response_status=None, error=AttemptError.TIMEOUT, error_message="Task time limit."
        )
    if 200 <= status < 300:
        code, message = "", ""
    elif status == 410:
        code, message = AttemptError.GONE, "The receiver is gone."
    elif 300 <= status < 400:
        code, message = AttemptError.REDIRECT, "Redirects are not followed."
    else:
        code, message = AttemptError.HTTP_STATUS, f"HTTP {status}."
    return AttemptResult(response_status=status, error=code, error_message=message)


def retry_delay(*, attempt: int) -> float | None:
    """Seconds before the attempt after ``attempt`` (jittered), or None when retries are spent."""
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    if attempt > len(schedule):
        return None
    jitter = settings.WEBHOOK_RETRY_JITTER
    return schedule[attempt - 1] * random.uniform(1 - jitter, 1 + jitter)


def webhook_delivery_attempt(*, delivery_id: int, attempt: int, worker_hostname: str) -> None:
    """Makes attempt number ``attempt``, records it, and ends the delivery or schedules a retry.

    Stale or duplicate task messages (the attempt was already made, or the delivery ended)
    are ignored, so each numbered attempt is recorded once. The attempt is claimed before its
    request, so two messages for it (a late one and a re-sent one) never both call the receiver.
    """
    this_attempt = Q(pk=delivery_id, status=DeliveryStatus.PENDING, attempt_count=attempt - 1)
    now = timezone.now()
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now + DUE_SLACK)
    # The claim is next_attempt_at moved past this task's hard time limit: another message for
    # this attempt waits until then, and makes the attempt only if this worker died first.
    claimed = WebhookDelivery.objects.filter(this_attempt, due).update(
        next_attempt_at=now + timedelta(seconds=ATTEMPT_CLAIM_SECONDS), updated_at=now
    )
    delivery = WebhookDelivery.objects.filter(this_attempt).first()
    if delivery is None:
        log_event(logger.info, "webhook_attempt_skipped", webhook_delivery=delivery_id, attempt=attempt)
        return
    if not claimed:
        # Not due yet (one hop of a longer wait), or another message holds this attempt: come
        # back when it is due or that claim lapses; by then the attempt is made or free.
        wait = (
            (delivery.next_attempt_at - timezone.now()).total_seconds() if delivery.next_attempt_at else 0.0
        )
        transaction.on_commit(
            partial(_send_attempt, delivery_id=delivery_id, attempt=attempt, countdown=max(wait, 0.0))
        )
        return
    host = urlsplit(delivery.url).hostname or ""
    with _host_slot(host) as slot_taken:
        if not slot_taken:
            _postpone_for_busy_host(delivery=delivery, attempt=attempt, host=host)
            return
        started_at = timezone.now()
        started = time.perf_counter()
        result = _post(delivery)
        duration_ms = round((time.perf_counter() - started) * 1000)
    if result.succeeded:
        status, delay = DeliveryStatus.DELIVERED, None
    else:
        delay = None if result.error in FINAL_ERRORS else retry_delay(attempt=attempt)
        status = DeliveryStatus.FAILED if delay is None else DeliveryStatus.PENDING
    next_attempt_at = None if delay is None else timezone.now() + timedelta(seconds=delay)
    with transaction.atomic():
        moved = WebhookDelivery.objects.filter(
            pk=delivery_id, status=DeliveryStatus.PENDING, attempt_count=attempt - 1
        ).update(
            attempt_count=attempt, status=status, next_attempt_at=next_attempt_at, updated_at=timezone.now()
        )
        if not moved:
            # Only when this attempt outlived its claim and another message took it over; the
            # receiver dedupes by webhook-id.
            log_event(logger.warning, "webhook_attempt_raced", webhook=delivery.webhook_id, attempt=attempt)
            return
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=attempt,
            started_at=started_at,
            duration_ms=duration_ms,
            succeeded=result.succeeded,
            response_status=result.response_status,
            error=result.error,
            error_message=result.error_message,
            worker_hostname=worker_hostname,
        )
        if delay is not None:
            transaction.on_commit(
                partial(_send_attempt, delivery_id=delivery_id, attempt=attempt + 1, countdown=delay)
            )
    log_event(
        logger.info,
        "webhook_attempt",
        webhook=delivery.webhook_id,
        attempt=attempt,
        status=status,
        response=result.response_status,
        error=result.error,
        duration_ms=duration_ms,
    )


# Drops lapsed slots (a worker died holding one), then takes a slot if fewer than the cap are held.
_TAKE_HOST_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


@contextmanager
def _host_slot(host: str) -> Iterator[bool]:
    """One of the ``WEBHOOK_HOST_CONCURRENCY`` attempts a destination host may have in flight
    across all workers; yields False when they are all taken. A slot lapses with the attempt's
    claim, so a killed worker cannot hold one for good."""
    key, token = f"imagegen:webhooks:host_slots:{host}", uuid.uuid4().hex
    now = time.time()
    try:
        taken = bool(
            redis_client().eval(
                _TAKE_HOST_SLOT,
                1,
                key,
                now,
                settings.WEBHOOK_HOST_CONCURRENCY,
                now + ATTEMPT_CLAIM_SECONDS,
                token,
                ATTEMPT_CLAIM_SECONDS,
            )
        )
    except redis.RedisError:
        # The cap spreads load; an unreachable Redis must not stop deliveries.
        log_event(logger.exception, "webhook_host_slot_unavailable", host=host)
        yield True
        return
    try:
        yield taken
    finally:
        if taken:
            try:
                redis_client().zrem(key, token)
            except redis.RedisError:
                log_event(logger.exception, "webhook_host_slot_not_released", host=host)


def _postpone_for_busy_host(*, delivery: WebhookDelivery, attempt: int, host: str) -> None:
    """Gives the claimed attempt back, due again in a few seconds: a busy host is no failure."""
    delay = HOST_BUSY_RETRY_SECONDS * random.uniform(1, 1.5)
    now = timezone.now()
    WebhookDelivery.objects.filter(
        pk=delivery.pk, status=DeliveryStatus.PENDING, attempt_count=attempt - 1
    ).update(next_attempt_at=now + timedelta(seconds=delay), updated_at=now)
    transaction.on_commit(partial(_send_attempt, delivery_id=delivery.pk, attempt=attempt, countdown=delay))
    log_event(
        logger.info, "webhook_attempt_postponed", webhook=delivery.webhook_id, attempt=attempt, host=host
    )


def webhook_delivery_resend(*, delivery_id: int) -> None:
    """Sends a delivery again now, as a new attempt with the same webhook-id and payload."""
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
        WebhookDelivery.objects.filter(pk=delivery_id).update(
            status=DeliveryStatus.PENDING, next_attempt_at=timezone.now(), updated_at=timezone.now()
        )
        transaction.on_commit(
            partial(_send_attempt, delivery_id=delivery_id, attempt=delivery.attempt_count + 1, countdown=0.0)
        )
    log_event(logger.info, "webhook_resend", webhook=delivery.webhook_id)


def webhook_deliveries_sweep() -> int:
    """Sends the attempt message again for pending deliveries whose message was lost; returns how
    many. Beat runs it every ``WEBHOOK_SWEEP_INTERVAL_SECONDS``.

    Each attempt is one broker message; a send that failed (broker down) or a message the
    broker lost (Redis restarted without persistence) leaves a delivery pending with nothing to
    make its attempt. One whose attempt is overdue by ``WEBHOOK_SWEEP_AFTER_SECONDS`` gets the
    same attempt number again, so a late original and the re-sent message make one attempt
    between them (webhook_delivery_attempt claims it). Messages already waiting in the webhooks
    queue count against ``SWEEP_MAX_PER_RUN``: a slow queue has lost nothing, and duplicates
    would only slow it further. A broker outage is logged, never raised, and ends the run: what
    it could not send stays overdue for a later run.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.WEBHOOK_SWEEP_AFTER_SECONDS)
    try:
        waiting = selectors.webhook_queue_pending_messages()
    except KombuOperationalError:
        log_event(logger.exception, "webhook_sweep_failed")
        return 0
    overdue = selectors.overdue_deliveries(due_before=cutoff, limit=SWEEP_MAX_PER_RUN - waiting)
    resent = 0
    for delivery_id, attempt_count in overdue:
        # Due from now: should this message wait in the queue too, it is sent again only once
        # the grace has passed again. No match: an attempt was made or claimed meanwhile.
        marked = WebhookDelivery.objects.filter(
            pk=delivery_id,
            status=DeliveryStatus.PENDING,
            attempt_count=attempt_count,
            next_attempt_at__lt=cutoff,
        ).update(next_attempt_at=now, updated_at=now)
        if not marked:
            continue
        if not _send_attempt(delivery_id=delivery_id, attempt=attempt_count + 1, countdown=0.0):
            break
        resent += 1
    log_event(logger.info, "webhooks_swept", resent=resent, overdue=len(overdue), queue_waiting=waiting)
    if resent:
        try:
            record_webhook_resends(count=resent)
        except redis.RedisError:
            # The broker is this Redis too: it may have gone down after the last send.
            log_event(logger.exception, "webhook_resends_not_counted")
    return resent
