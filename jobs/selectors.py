"""Every read of jobs that a face shows: status for the API and page, numbers for operators."""

from __future__ import annotations

import functools
import ipaddress
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Min, Q, QuerySet, Sum
from django.utils import timezone

from config.celery import app as celery_app
from config.celery import generation_queue, queue_pending_messages
from core.redis import redis_client
from core.stored_secrets import decrypt_secret
from generator import ParameterLimits
from generator.models import ModelSpec
from jobs.errors import job_not_found
from jobs.models import ACTIVE_STATUSES, TERMINAL_STATUSES, FailureCode, GenerationJob, JobImage, JobStatus
from ratelimit.selectors import api_key_webhook_secrets

# A heartbeat key (a job's, or a GPU worker's liveness) outlives its refresh by this many
# intervals, so one late beat is no death.
HEARTBEAT_LIFETIME_BEATS = 3
# GPU worker hostname -> Unix time of its last liveness beat, busy or idle.
LIVE_GPU_WORKERS_KEY = "jobs:gpu-workers"
# How far back served compute counts in the weighted fair order: long enough to even out
# bursts, short enough that yesterday's heavy use does not hold a caller back today.
FAIR_SHARE_WINDOW = timedelta(hours=1)


def model_registry() -> dict[str, ModelSpec]:
    """Every configured model by name, in the registry's order (``GENERATOR_MODELS``)."""
    fallback_limits = ParameterLimits(**settings.JOB_LIMITS)
    return {
        name: ModelSpec.from_config(
            name, config, fallback_defaults=settings.JOB_DEFAULTS, fallback_limits=fallback_limits
        )
        for name, config in settings.GENERATOR_MODELS.items()
    }


def model_names() -> list[str]:
    return list(settings.GENERATOR_MODELS)


def get_model(name: str | None = None) -> ModelSpec | None:
    """The model of this name (the deployment's default model for None), or None if none is."""
    return model_registry().get(settings.GENERATOR_DEFAULT_MODEL if name is None else name)


def models_listed() -> list[dict[str, object]]:
    """Every configured model as the API lists it, the default one marked."""
    return [
        {**spec.describe(), "default": name == settings.GENERATOR_DEFAULT_MODEL}
        for name, spec in model_registry().items()
    ]


def job_get(*, job_id: str | uuid.UUID) -> GenerationJob:
    """The job with its images, or a ``not_found`` ApplicationError (also for ids that are not UUIDs)."""
    job = GenerationJob.objects.prefetch_related("images").filter(pk=_parsed_job_id(job_id)).first()
    if job is None:
        raise job_not_found()
    return job


def job_with_images_get(*, job_id: str | uuid.UUID) -> tuple[GenerationJob, list[JobImage]]:
    """The job and its images in one query, for the poll path; a ``not_found`` ApplicationError
    as ``job_get``.

    A prepared statement with the model's own conversions rather than a queryset: building
    and compiling the queryset cost three times what running it did, on the hottest read there is.
    """
    database = connections[DEFAULT_DB_ALIAS]
    query = _job_with_images_query(database)
    pk = GenerationJob._meta.pk
    assert pk is not None
    with database.cursor() as cursor:
        cursor.execute(query.sql, [pk.get_db_prep_value(_parsed_job_id(job_id), database)])
        rows = cursor.fetchall()
    if not rows:
        raise job_not_found()
    job_values = [convert(value) for convert, value in zip(query.converters, rows[0], strict=False)]
    job = GenerationJob.from_db(database.alias, query.job_columns, job_values)
    images = [
        JobImage(job_id=job.pk, index=index, seed=seed, file=file)
        for index, seed, file in (row[len(query.job_columns) :] for row in rows)
        if index is not None
    ]
    return job, images


@dataclass(frozen=True)
class _PreparedQuery:
    sql: str
    job_columns: tuple[str, ...]
    converters: tuple[Callable[[Any], Any], ...]


@functools.lru_cache(maxsize=64)  # one per database connection object: one per web thread
def _job_with_images_query(database: BaseDatabaseWrapper) -> _PreparedQuery:
    """Every job column, then the image's index, seed and file (NULL without one), one row
    per image; with each job column's conversions as the ORM's compiler would apply them."""
    fields = GenerationJob._meta.concrete_fields
    quote = database.ops.quote_name

    def converter(field: Any) -> Callable[[Any], Any]:
        column = field.get_col("job")
        steps = [*database.ops.get_db_converters(column), *column.get_db_converters(database)]

        def convert(value: Any) -> Any:
            for step in steps:
                value = step(value, column, database)
            return value

        return convert

    sql = (
        f"SELECT {', '.join(f'job.{quote(str(field.column))}' for field in fields)}, "
        f"image.{quote('index')}, image.seed, image.file "
        f"FROM {quote(GenerationJob._meta.db_table)} job "
        f"LEFT JOIN {quote(JobImage._meta.db_table)} image ON image.job_id = job.id "
        f"WHERE job.id = %s ORDER BY image.{quote('index')}"
    )
    return _PreparedQuery(
        sql=sql,
        job_columns=tuple(field.attname for field in fields),
        converters=tuple(converter(field) for field in fields),
    )


def _parsed_job_id(job_id: str | uuid.UUID) -> uuid.UUID:
    try:
        return job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except ValueError:
        raise job_not_found() from None


@dataclass(frozen=True)
class Throughput:
    """How fast the queue moves, measured from recently finished jobs."""

    seconds_per_job: float  # how much the queue advances per job, all workers together
    run_seconds: float  # how long one job runs once started
    measured_jobs: int  # 0 when there is no recent history and the fallback is used


def queue_throughput(*, model: str | None = None) -> Throughput:
    """Recent throughput: busy seconds per completed job, batches and workers accounted for;
    of ``model``'s jobs only when given (each model has its own workers and speed).

    Jobs claimed together share one ``started_at`` on one worker, so a batch's time is
    counted once however many jobs it served; parallel workers divide it.
    """
    since = timezone.now() - timedelta(seconds=settings.JOB_ETA_WINDOW_SECONDS)
    completed = GenerationJob.objects.filter(
        status=JobStatus.COMPLETED,
        deduplicated_from__isnull=True,
        started_at__isnull=False,
        finished_at__gte=since,
    )
    recent = list(
        (completed.filter(model=model) if model else completed)
        .order_by("-finished_at")
        .values_list("worker_hostname", "started_at", "finished_at")[: settings.JOB_ETA_SAMPLE_JOBS]
    )
    if not recent:
        fallback = settings.JOB_ETA_FALLBACK_SECONDS
        return Throughput(seconds_per_job=fallback, run_seconds=fallback, measured_jobs=0)
    durations = [
        (worker, started, (finished - started).total_seconds())
        for worker, started, finished in recent
        if started is not None and finished is not None
    ]
    batches: dict[tuple[str, datetime], float] = {}
    for worker, started, seconds in durations:
        batches[(worker, started)] = max(batches.get((worker, started), 0.0), seconds)
    workers = len({worker for worker, _started in batches})
    return Throughput(
        seconds_per_job=sum(batches.values()) / len(durations) / workers,
        run_seconds=sum(seconds for _worker, _started, seconds in durations) / len(durations),
        measured_jobs=len(durations),
    )


def client_turn_order(*, models: Sequence[str] | None = None) -> list[str]:
    """Accounts with queued jobs, in the order the workers serve them (docs/queue.md).

    An account is a job's ``client_aggregate``: an API key's "key:<prefix>", or an anonymous
    client's widest aggregate network (an IPv6 /48 by default; its IPv4 address or IPv6 /64
    when no aggregates are set), so a host cannot take several turns by rotating through the
    addresses it holds.

    Weighted fair: the account with the least compute served in the last
    ``FAIR_SHARE_WINDOW`` per unit of its weight goes first; ties go to the never served,
    then the least recently served, then the one whose oldest queued job is oldest.
    Deduplicated jobs used no GPU time and do not count. ``models`` narrows the accounts to
    those waiting for these models (a worker's served models); compute served counts them all.
    """
    queued = GenerationJob.objects.filter(status=JobStatus.QUEUED).order_by()
    if models is not None:
        queued = queued.filter(model__in=models)
    waiting = {
        network: (oldest, weight)
        for network, oldest, weight in queued.values("client_aggregate")
        .annotate(oldest=Min("created_at"), weight=Max("priority_weight"))
        .values_list("client_aggregate", "oldest", "weight")
    }
    served = GenerationJob.objects.filter(
        client_aggregate__in=list(waiting), started_at__isnull=False, deduplicated_from__isnull=True
    ).order_by()
    last_served = dict(
        served.values("client_aggregate")
        .annotate(last=Max("started_at"))
        .values_list("client_aggregate", "last")
    )
    served_units = dict(
        served.filter(started_at__gte=timezone.now() - FAIR_SHARE_WINDOW)
        .values("client_aggregate")
        .annotate(units=Sum("cost_units"))
        .values_list("client_aggregate", "units")
    )

    def turn(network: str) -> tuple[float, bool, datetime, datetime]:
        oldest, weight = waiting[network]
        last = last_served.get(network)
        share = float(served_units.get(network) or 0) / weight
        return (share, last is not None, last or oldest, oldest)

    return sorted(waiting, key=turn)


def job_queue_position(*, job: GenerationJob) -> int | None:
    """1 for the job served next, None once it left the queue. Follows the fair order:
    clients take turns, one job each. Only jobs of the same model count: other models' jobs
    wait for other workers.

    A job that is its client's k-th oldest queued job waits for up to k jobs of every client
    served after its own in the turn order, and k+1 of every client served before. Batching
    can serve several jobs per pipeline call; the ETA accounts for that, the position does not.
    """
    if job.status != JobStatus.QUEUED:
        return None
    queued = GenerationJob.objects.filter(status=JobStatus.QUEUED, model=job.model)
    earlier_own = queued.filter(client_aggregate=job.client_aggregate, created_at__lt=job.created_at).count()
    counts = dict(
        queued.order_by()
        .values("client_aggregate")
        .annotate(n=Count("id"))
        .values_list("client_aggregate", "n")
    )
    ahead = earlier_own
    before_own_turn = True
    for network in client_turn_order(models=[job.model]):
        if network == job.client_aggregate:
            before_own_turn = False
            continue
        ahead += min(counts.get(network, 0), earlier_own + 1 if before_own_turn else earlier_own)
    return ahead + 1


@dataclass(frozen=True)
class QueueEstimate:
    position: int
    estimated_start_at: datetime
    estimated_finish_at: datetime


def job_queue_estimate(*, job: GenerationJob, position: int | None = None) -> QueueEstimate | None:
    """Position and estimated start and finish of a queued job; None once it left the queue.
    ``position``, when the caller has just read it, saves reading it again.

    The jobs of its model ahead, plus what remains of that model's running ones, times the
    model's measured seconds per job.
    """
    if position is None:
        position = job_queue_position(job=job)
    if position is None:
        return None
    throughput = queue_throughput(model=job.model)
    running = GenerationJob.objects.filter(status=JobStatus.RUNNING, model=job.model).values_list(
        "progress_step", "progress_total"
    )
    in_flight = sum(1 - step / total if total else 1.0 for step, total in running)
    start = timezone.now() + timedelta(seconds=(position - 1 + in_flight) * throughput.seconds_per_job)
    return QueueEstimate(
        position=position,
        estimated_start_at=start,
        estimated_finish_at=start + timedelta(seconds=throughput.run_seconds),
    )


def queued_job_count() -> int:
    return GenerationJob.objects.filter(status=JobStatus.QUEUED).count()


def jobs_in_order(*, job_ids: Sequence[str]) -> list[GenerationJob]:
    """The jobs among these ids that still exist, with their images, in the order given."""
    by_id = {
        str(job.pk): job for job in GenerationJob.objects.prefetch_related("images").filter(pk__in=job_ids)
    }
    return [by_id[job_id] for job_id in job_ids if job_id in by_id]


def jobs_matching(*, queryset: QuerySet[GenerationJob], term: str) -> QuerySet[GenerationJob]:
    """The operators' search box: a job id or a client IP matches exactly (an index lookup
    on a million rows); otherwise every word must appear in the prompt."""
    term = term.strip()
    if not term:
        return queryset
    try:
        return queryset.filter(pk=uuid.UUID(term))
    except ValueError:
        pass
    try:
        return queryset.filter(client_ip=str(ipaddress.ip_address(term)))
    except ValueError:
        pass
    for word in term.split():
        queryset = queryset.filter(prompt__icontains=word)
    return queryset


def recent_worker_hostnames(*, days: int = 7) -> list[str]:
    """Workers that started jobs lately: the admin's worker filter, without scanning history."""
    since = timezone.now() - timedelta(days=days)
    return sorted(
        GenerationJob.objects.filter(created_at__gte=since)
        .exclude(worker_hostname="")
        .order_by()
        .values_list("worker_hostname", flat=True)
        .distinct()
    )


# Recent throughput, for the estimated wait: long enough to smooth batches, short enough to
# follow a worker joining or leaving.
THROUGHPUT_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class FailureCount:
    code: str
    label: str
    last_hour: int
    last_day: int


@dataclass(frozen=True)
class ModelQueue:
    """One model's line on the dashboard: each model has its own queue and workers."""

    model: str
    queued: int
    running: int
    oldest_queued_age_seconds: float | None


@dataclass(frozen=True)
class QueueDashboard:
    queued: int
    running: int
    oldest_queued_age_seconds: float | None
    completed_per_minute: float
    # None when jobs wait but nothing completed lately: there is no rate to divide by.
    estimated_wait_seconds: float | None
    completed_last_hour: int
    completed_last_day: int
    failed_last_hour: int
    failed_last_day: int
    failures: list[FailureCount]
    run_seconds_p50: float | None
    run_seconds_p95: float | None
    by_model: list[ModelQueue]


def queue_dashboard() -> QueueDashboard:
    """The operators' numbers, in five indexed queries whatever the size of the history."""
    now = timezone.now()
    hour_ago, day_ago = now - timedelta(hours=1), now - timedelta(days=1)

    counts: dict[str, int] = {}
    oldest_queued: datetime | None = None
    # Every configured model, idle or not, then any model jobs still name but the registry dropped.
    model_counts: dict[str, dict[str, int]] = {model: {} for model in model_names()}
    model_oldest_queued: dict[str, datetime] = {}
    for model, status, n, oldest in (
        GenerationJob.objects.filter(status__in=ACTIVE_STATUSES)
        .order_by()
        .values_list("model", "status")
        .annotate(n=Count("pk"), oldest=Min("created_at"))
    ):
        counts[status] = counts.get(status, 0) + n
        model_counts.setdefault(model, {})[status] = n
        if status == JobStatus.QUEUED:
            model_oldest_queued[model] = oldest
            oldest_queued = min(oldest_queued, oldest) if oldest_queued else oldest
    queued = counts.get(JobStatus.QUEUED, 0)

    completed = GenerationJob.objects.filter(status=JobStatus.COMPLETED, finished_at__gte=day_ago).aggregate(
        day=Count("pk"),
        hour=Count("pk", filter=Q(finished_at__gte=hour_ago)),
        window=Count("pk", filter=Q(finished_at__gte=now - THROUGHPUT_WINDOW)),
    )
    labels = dict(FailureCode.choices)
    failures = [
        FailureCount(
            code=row["failure_code"],
            label=labels.get(row["failure_code"], row["failure_code"]),
            last_hour=row["last_hour"],
            last_day=row["last_day"],
        )
        for row in GenerationJob.objects.filter(status=JobStatus.FAILED, finished_at__gte=day_ago)
        .order_by()
        .values("failure_code")
        .annotate(last_day=Count("pk"), last_hour=Count("pk", filter=Q(finished_at__gte=hour_ago)))
        .order_by("-last_day", "failure_code")
    ]

    per_second = completed["window"] / THROUGHPUT_WINDOW.total_seconds()
    if queued == 0:
        estimated_wait: float | None = 0.0
    else:
        estimated_wait = queued / per_second if per_second else None
    p50, p95 = _run_seconds_percentiles(since=day_ago, count=completed["day"], quantiles=(0.5, 0.95))
    return QueueDashboard(
        queued=queued,
        running=counts.get(JobStatus.RUNNING, 0),
        oldest_queued_age_seconds=(now - oldest_queued).total_seconds() if oldest_queued else None,
        completed_per_minute=per_second * 60,
        estimated_wait_seconds=estimated_wait,
        completed_last_hour=completed["hour"],
        completed_last_day=completed["day"],
        failed_last_hour=sum(f.last_hour for f in failures),
        failed_last_day=sum(f.last_day for f in failures),
        failures=failures,
        run_seconds_p50=p50,
        run_seconds_p95=p95,
        by_model=[
            ModelQueue(
                model=model,
                queued=model_counts[model].get(JobStatus.QUEUED, 0),
                running=model_counts[model].get(JobStatus.RUNNING, 0),
                oldest_queued_age_seconds=(
                    (now - model_oldest_queued[model]).total_seconds()
                    if model in model_oldest_queued
                    else None
                ),
            )
            for model in model_counts
        ],
    )


def _run_seconds_percentiles(
    *, since: datetime, count: int, quantiles: tuple[float, ...]
) -> list[float | None]:
    """Nearest-rank percentiles of run time over jobs completed since ``since``: the database
    sorts, one row comes back per percentile."""
    if count == 0:
        return [None for _ in quantiles]
    by_run_time = (
        GenerationJob.objects.filter(
            status=JobStatus.COMPLETED, finished_at__gte=since, started_at__isnull=False
        )
        .annotate(
            run_time=ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        )
        .order_by("run_time")
        .values_list("run_time", flat=True)
    )
    values: list[float | None] = []
    for quantile in quantiles:
        rank = max(math.ceil(quantile * count), 1) - 1
        # The count came from an earlier query: a row may have aged out of the window since.
        found = list(by_run_time[rank : rank + 1])
        values.append(found[0].total_seconds() if found else None)
    return values


def live_workers(*, timeout: float) -> list[str]:
    """Hostnames of Celery workers that answer a ping within ``timeout`` seconds."""
    replies = celery_app.control.ping(timeout=timeout) or []
    return sorted(hostname for reply in replies for hostname in reply)


def gpu_queue_pending_messages(*, model: str) -> int:
    """Wake-ups waiting in the broker's queue of ``model`` (not counting the ones being worked on)."""
    return queue_pending_messages(queue=generation_queue(model))


# --- Numbers for operators (metrics) ------------------------------------------------------


def active_job_counts() -> dict[str, int]:
    """How many jobs are queued and running now, both present (zero when none).

    Only the active statuses: their rows are one range of the status indexes, bounded by the
    queue's limit and the workers, however long the history of finished jobs grows.
    """
    counts = dict(
        GenerationJob.objects.filter(status__in=ACTIVE_STATUSES)
        .order_by()
        .values_list("status")
        .annotate(n=Count("*"))
    )
    return {status: counts.get(status, 0) for status in ACTIVE_STATUSES}


@dataclass(frozen=True)
class Waiting:
    count: int
    oldest_age_seconds: float  # 0 when none waits


def queued_jobs_by_model() -> dict[str, Waiting]:
    """The queue of each model this deployment serves, one index range each (status, created_at).

    Every model is present, idle or not, so that an autoscaler always finds its series."""
    now = timezone.now()
    queued = {}
    for model in model_names():
        found = GenerationJob.objects.filter(status=JobStatus.QUEUED, model=model).aggregate(
            count=Count("pk"), oldest=Min("created_at")
        )
        oldest = found["oldest"]
        queued[model] = Waiting(
            count=found["count"],
            oldest_age_seconds=max((now - oldest).total_seconds(), 0.0) if oldest else 0.0,
        )
    return queued


def live_gpu_workers() -> set[str]:
    """Hostnames of GPU worker processes that beat within a heartbeat key's lifetime."""
    lifetime = settings.WORKER_HEARTBEAT_SECONDS * HEARTBEAT_LIFETIME_BEATS
    members = redis_client().zrangebyscore(LIVE_GPU_WORKERS_KEY, time.time() - lifetime, "+inf")
    return {str(member) for member in members}


@dataclass(frozen=True)
class QueueHistory:
    """The last hour in equal buckets, oldest first: what the dashboard's chart draws."""

    bucket_ends: list[datetime]
    completed: list[int]  # jobs completed within each bucket
    queue_depth: list[int]  # jobs waiting at each bucket's end
    failures: dict[str, list[int]]  # failure code -> jobs failed within each bucket


def queue_history(*, buckets: int = 12, span: timedelta = timedelta(hours=1)) -> QueueHistory:
    """Derived from the jobs' own timestamps in two queries over the jobs active now or
    finished within ``span``, so nothing needs to sample the queue.

    A job waited at ``t`` if it was created by then and neither started nor finished by then.
    A job the reaper re-queued lost its first start, so it counts as waiting since creation.
    """
    now = timezone.now()
    step = span / buckets
    ends = [now - span + step * (index + 1) for index in range(buckets)]
    recent = GenerationJob.objects.filter(
        Q(status__in=ACTIVE_STATUSES) | Q(finished_at__gt=now - span)
    ).order_by()

    def within(end: datetime) -> Q:
        return Q(finished_at__gt=end - step, finished_at__lte=end)

    def waiting_at(end: datetime) -> Q:
        not_started = Q(started_at__isnull=True) | Q(started_at__gt=end)
        not_finished = Q(finished_at__isnull=True) | Q(finished_at__gt=end)
        return Q(created_at__lte=end) & not_started & not_finished

    counts = recent.aggregate(
        **{
            f"completed_{i}": Count("pk", filter=within(end) & Q(status=JobStatus.COMPLETED))
            for i, end in enumerate(ends)
        },
        **{f"waiting_{i}": Count("pk", filter=waiting_at(end)) for i, end in enumerate(ends)},
    )
    per_bucket = [f"failed_{i}" for i in range(buckets)]
    failures: dict[str, list[int]] = {
        code: list(failed)
        for code, *failed in recent.filter(status=JobStatus.FAILED, finished_at__gt=now - span)
        .values("failure_code")
        .annotate(
            **{name: Count("pk", filter=within(end)) for name, end in zip(per_bucket, ends, strict=True)}
        )
        .order_by("failure_code")
        .values_list("failure_code", *per_bucket)
    }
    return QueueHistory(
        bucket_ends=ends,
        completed=[counts[f"completed_{i}"] for i in range(buckets)],
        queue_depth=[counts[f"waiting_{i}"] for i in range(buckets)],
        failures=failures,
    )


def job_webhook_secrets(*, job_id: uuid.UUID | str) -> list[str]:
    """The secrets that sign this job's webhook deliveries now: its key's (both during a
    rotation's overlap), or its own for an anonymous job; empty for one from before either."""
    job = GenerationJob.objects.select_related("api_key").filter(pk=job_id).first()
    if job is None:
        return []
    if job.api_key is not None:
        return api_key_webhook_secrets(api_key=job.api_key)
    return [decrypt_secret(job.webhook_secret_encrypted)] if job.webhook_secret_encrypted else []


def job_own_webhook_secret(*, job: GenerationJob) -> str | None:
    """An anonymous job's own webhook secret, for its submit's answer only; None for others."""
    return decrypt_secret(job.webhook_secret_encrypted) if job.webhook_secret_encrypted else None


def job_is_finished(*, job_id: uuid.UUID) -> bool:
    """Whether the job reached a terminal status; an unknown job counts as finished (nothing to wait for)."""
    status = GenerationJob.objects.filter(pk=job_id).values_list("status", flat=True).first()
    return status is None or status in TERMINAL_STATUSES
