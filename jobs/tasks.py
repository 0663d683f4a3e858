"""Celery tasks of the jobs app: thin wrappers that call services and the worker module.

The GPU worker module (torch, diffusers) is imported inside the task bodies and signal
handlers, so that web processes that only *send* these tasks never load it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task, signals

logger = logging.getLogger(__name__)

GPU_QUEUE = "gpu"
_consumes_gpu_queue = False


@signals.celeryd_after_setup.connect
def _note_gpu_consumer(sender: str, instance: Any, **kwargs: Any) -> None:
    """Runs in the worker's main process before it forks: is this a GPU worker?"""
    global _consumes_gpu_queue
    _consumes_gpu_queue = GPU_QUEUE in instance.app.amqp.queues.consume_from


@signals.worker_process_init.connect
def _load_pipeline_at_process_start(**kwargs: Any) -> None:
    """Each GPU worker process loads the pipeline once, before its first job arrives."""
    if _consumes_gpu_queue:
        from jobs.worker import get_engine

        get_engine()


@shared_task(name="jobs.tasks.generate_task", bind=True)
def generate_task(self: Any) -> None:
    """A wake-up: claim the next batch of queued jobs from the database and run it."""
    from jobs.worker import process_next_batch

    process_next_batch(worker_hostname=self.request.hostname or "unknown")
