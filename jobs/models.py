"""GenerationJob: the record of truth for every request to generate an image."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from django.db import models
from django.urls import reverse

from generator import GenerationParameters
from generator.parameters import PARAMETER_NAMES


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)
TERMINAL_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)

# The only legal moves, as target -> allowed sources. Every state change goes through
# jobs.services, which checks these in the same UPDATE that makes the change, so that
# concurrent writers (web, workers, reaper) cannot break them.
TRANSITION_SOURCES: dict[str, tuple[str, ...]] = {
    JobStatus.QUEUED: (JobStatus.RUNNING,),  # the reaper re-queues a job whose worker died
    JobStatus.RUNNING: (JobStatus.QUEUED,),
    JobStatus.COMPLETED: (JobStatus.RUNNING,),
    JobStatus.FAILED: (JobStatus.QUEUED, JobStatus.RUNNING),
    JobStatus.CANCELLED: (JobStatus.QUEUED, JobStatus.RUNNING),
}


class FailureCode(models.TextChoices):
    INVALID_PROMPT = "invalid_prompt", "Invalid prompt"
    TIMEOUT = "timeout", "Timed out"
    OUT_OF_MEMORY = "out_of_memory", "Out of memory"
    INFERENCE_ERROR = "inference_error", "Inference error"
    WORKER_LOST = "worker_lost", "Worker lost"
    CANCELLED = "cancelled", "Cancelled"
    DEADLINE_EXCEEDED = "deadline_exceeded", "Deadline exceeded"


class GenerationJob(models.Model):
    # One column per GenerationParameters field, of the same name (``parameters``, ``fields_from``).
    # The id is the capability to read a job (there are no accounts), so it is random.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    prompt = models.TextField()
    negative_prompt = models.TextField(blank=True, default="")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    steps = models.PositiveIntegerField()
    guidance_scale = models.FloatField()
    seed = models.BigIntegerField()
    scheduler = models.CharField(max_length=32, default="default")
    num_images = models.PositiveSmallIntegerField(default=1)
    # A name in the model registry; its queued jobs are what that model's workers claim.
    model = models.CharField(max_length=255)

    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    progress_step = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    failure_code = models.CharField(max_length=32, choices=FailureCode.choices, blank=True, default="")
    failure_message = models.TextField(blank=True, default="")
    warnings = models.JSONField(default=list, blank=True)

    client_ip = models.GenericIPAddressField()
    # The key abuse control counted this job under (ratelimit.client_ip.client_network):
    # the address itself for IPv4, its /64 (configurable) for IPv6.
    client_network = models.CharField(max_length=64, blank=True, default="")
    # What the fair queue and the aggregate active-job limit count it under (Caller.queue_account):
    # an anonymous network's widest aggregate (ANON_AGGREGATE_PREFIXES_*), else client_network.
    client_aggregate = models.CharField(max_length=64, blank=True, default="")
    # Set when submitted with an API key; client_network is then the key's account "key:<prefix>".
    api_key = models.ForeignKey(
        "ratelimit.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    # Compute units (jobs.cost) reserved from the caller's budget, and the caller's share of
    # served compute in the fair queue (jobs.selectors.client_turn_order).
    cost_units = models.DecimalField(max_digits=13, decimal_places=3, default=Decimal(0))
    priority_weight = models.FloatField(default=1.0)
    # Webhooks: where to POST the chosen events; checked by webhooks.services.
    webhook_url = models.CharField(max_length=2048, blank=True, default="")
    webhook_events = models.JSONField(default=list, blank=True)
    # An anonymous job's own webhook signing secret, encrypted (core.stored_secrets), shown once
    # in the submit's 202; a key's jobs are signed with the key's secret instead.
    webhook_secret_encrypted = models.TextField(blank=True, default="", editable=False)
    # Set when the job was answered from an identical completed job's files, without GPU time.
    deduplicated_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="duplicates"
    )
    worker_hostname = models.CharField(max_length=255, blank=True, default="")
    # Operators' history: a retry is a new job that points at the one it repeats; the reaper
    # re-queues a job whose worker was lost at most REAPER_MAX_REQUEUES times, counted here.
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    requeue_count = models.PositiveSmallIntegerField(default=0)
    results_deleted_at = models.DateTimeField(null=True, blank=True)
    # The client's deadline (Cancel-After, deadline_seconds): unfinished then, it fails deadline_exceeded.
    deadline_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            models.Index(fields=["status", "created_at"], name="job_status_created_idx"),
            models.Index(fields=["client_ip", "created_at"], name="job_client_created_idx"),
            models.Index(fields=["failure_code", "created_at"], name="job_failure_created_idx"),
            models.Index(fields=["client_network", "status"], name="job_network_status_idx"),
            models.Index(fields=["client_aggregate", "status"], name="job_aggregate_status_idx"),
            # The admin: the unfiltered list (newest first), its date and worker filters; the
            # dashboard's counts and run-time percentiles by finish time.
            models.Index(fields=["created_at"], name="job_created_idx"),
            models.Index(fields=["worker_hostname", "created_at"], name="job_worker_created_idx"),
            models.Index(fields=["status", "finished_at"], name="job_status_finished_idx"),
            models.Index(fields=["seed", "status"], name="job_dedupe_lookup_idx"),
            # The deadline sweep: active jobs past their deadline.
            models.Index(fields=["status", "deadline_at"], name="job_status_deadline_idx"),
            models.Index(fields=["model", "status", "created_at"], name="job_model_status_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=JobStatus.values), name="job_status_valid"),
            models.CheckConstraint(
                condition=~models.Q(status__in=TERMINAL_STATUSES) | models.Q(finished_at__isnull=False),
                name="job_terminal_has_finished_at",
            ),
            models.CheckConstraint(
                condition=~models.Q(status__in=(JobStatus.FAILED, JobStatus.CANCELLED))
                | ~models.Q(failure_code=""),
                name="job_failure_has_code",
            ),
            models.CheckConstraint(
                condition=models.Q(progress_step__lte=models.F("progress_total")),
                name="job_progress_within_total",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} [{self.status}] {self.prompt[:40]}"

    def get_absolute_url(self) -> str:
        return reverse("api:job-detail", kwargs={"job_id": self.id})

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def parameters(self) -> GenerationParameters:
        return GenerationParameters(**{name: getattr(self, name) for name in PARAMETER_NAMES})

    @staticmethod
    def fields_from(params: GenerationParameters) -> dict[str, Any]:
        """The columns that store these parameters; ``seed`` must be drawn already (the column is NOT NULL)."""
        return asdict(params)


class JobImage(models.Model):
    """One result file of a job; a job with ``num_images`` > 1 has several."""

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="images")
    index = models.PositiveSmallIntegerField()
    file = models.FileField(upload_to="results/", max_length=255)
    seed = models.BigIntegerField()

    class Meta:
        ordering = ("job", "index")
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="job_image_unique_index")]

    def __str__(self) -> str:
        return self.file.name or ""


class IdempotencyKey(models.Model):
    """An ``Idempotency-Key`` a client sent with a submit, and the job it created.

    The unique constraints per (client IP, key) for anonymous callers and per (API key, key)
    are what stop two concurrent submits with one key from creating two jobs; rows older than ``IDEMPOTENCY_TTL_SECONDS`` no longer count.
    """

    client_ip = models.GenericIPAddressField()
    # Set for a key sent with an API key: it is then that key's, whatever the address.
    api_key = models.ForeignKey("ratelimit.ApiKey", null=True, blank=True, on_delete=models.CASCADE)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="idempotency_keys")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="idempotency_created_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["client_ip", "key"],
                condition=models.Q(api_key__isnull=True),
                name="idempotency_key_unique_per_client",
            ),
            models.UniqueConstraint(
                fields=["api_key", "key"],
                condition=models.Q(api_key__isnull=False),
                name="idempotency_key_unique_per_api_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.client_ip} {self.key}"
