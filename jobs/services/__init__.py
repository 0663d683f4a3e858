"""Every write to a GenerationJob, one module per lifecycle stage: submit, claim, finish,
reaper, liveness, deadline."""

from jobs.services.claim import claim_next_jobs, job_cancel, job_record_progress
from jobs.services.deadline import job_fail_deadline_exceeded, jobs_fail_overdue
from jobs.services.finish import job_complete, job_fail, job_finished, webhook_event_enqueue
from jobs.services.liveness import (
    HEARTBEAT_WATCHED_SINCE_KEY,
    cancelled_job_ids,
    job_record_heartbeat,
    worker_record_alive,
)
from jobs.services.reaper import ReapResult, delete_expired_results, reap_stale_jobs, republish_queued_jobs
from jobs.services.submit import job_retry, job_submit, wake_gpu_worker
from jobs.services.thumbnail import THUMBNAIL_PIXELS, image_thumbnail, thumbnail_name
from jobs.services.transition import JobId, transition_job
