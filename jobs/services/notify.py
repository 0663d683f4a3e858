"""A job's webhook events: the jobs app builds the payload, the webhooks app delivers it."""

from __future__ import annotations

from functools import partial

from django.db import transaction

from jobs.api.serializers import JobSerializer
from jobs.models import GenerationJob
from jobs.services.transition import JobId
from webhooks.services import webhook_delivery_create


def webhook_event_enqueue(*, job: GenerationJob, event: str) -> None:
    """After the commit, records and sends ``event`` if the job subscribed to it; errors are logged,
    never raised. Free for the many jobs without a webhook (``job`` needs only those fields)."""
    if not job.webhook_url or event not in job.webhook_events:
        return
    transaction.on_commit(partial(_record_and_send, job_id=job.pk, event=event), robust=True)


def _record_and_send(*, job_id: JobId, event: str) -> None:
    job = GenerationJob.objects.prefetch_related("images").exclude(webhook_url="").filter(pk=job_id).first()
    if job is None or event not in job.webhook_events:
        return
    # The API's status shape, read after the commit, so the payload shows the job as it now is.
    webhook_delivery_create(job_id=job.pk, url=job.webhook_url, event=event, data=JobSerializer(job).data)
