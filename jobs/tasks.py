"""Celery tasks of the jobs app: thin wrappers that call services and the worker module.

The GPU worker module (torch, diffusers) is imported inside the task bodies and signal
handlers, so that web processes that only *send* these tasks never load it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task, signals
from django.conf import settings

from config.celery import app, generation_queue
from core.logging import log_event

logger = logging.getLogger(__name__)


# The worker's --hostname, set in the parent before its pool processes fork and inherit it.
_worker_hostname = "unknown"


@signals.celeryd_init.connect
def _remember_worker_hostname(sender: str, **kwargs: Any) -> None:
    global _worker_hostname
    _worker_hostname = sender


@signals.worker_process_init.connect
def _load_pipeline_at_process_start(**kwargs: Any) -> None:
    """Each GPU worker process loads the pipeline once, before its first job arrives, then
    reports itself live (the live-GPU-workers gauge) for as long as it runs.

    Loading inside the first task instead would also let a soft time limit fire during the
    imports, where library code that catches every exception can swallow it.
    """
    # The pool forks after the worker selected its queues (-Q), so the child knows them.
    consumed = app.amqp.queues.consume_from or {}
    if any(generation_queue(model) in consumed for model in settings.GENERATOR_SERVED_MODELS):
        from jobs.worker import WorkerLiveness, get_engine

        # The first served model loads now; any other on its first job.
        get_engine(settings.GENERATOR_SERVED_MODELS[0])
        WorkerLiveness(worker_hostname=_worker_hostname, interval=settings.WORKER_HEARTBEAT_SECONDS).start()


@shared_task(
    name="jobs.tasks.generate_task",
    bind=True,
    soft_time_limit=settings.GENERATION_SOFT_TIME_LIMIT,
    time_limit=settings.GENERATION_TIME_LIMIT,
)
def generate_task(self: Any, model: str | None = None) -> None:
    """A wake-up from ``model``'s queue: claim the next batch of that model's queued jobs from the
    database and run it (None: of any model this worker serves)."""
    from jobs.worker import process_next_batch

    process_next_batch(worker_hostname=self.request.hostname or "unknown", model=model)


@shared_task(name="jobs.tasks.reap_stale_jobs_task")
def reap_stale_jobs_task() -> None:
    """Beat's periodic sweep (on the ``maintenance`` queue, never ``gpu``): stuck jobs, jobs past
    their deadline, lost wake-ups, expired result files."""
    from jobs import services

    reaped = services.reap_stale_jobs()
    overdue = services.jobs_fail_overdue()
    republished = services.republish_queued_jobs()
    deleted = services.delete_expired_results()
    log_event(
        logger.info,
        "reaper_ran",
        requeued=reaped.requeued,
        failed=reaped.failed,
        deadlines_exceeded=overdue,
        republished=republished,
        files_deleted=deleted,
    )
