"""Abuse control records: the operators' blocklist, API keys and per-caller usage."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from ratelimit.client_ip import normalise_network

# Usage rows and jobs of an API key are counted under "key:<prefix>" instead of a network.
API_KEY_ACCOUNT_PREFIX = "key:"
MILLIUNITS_PER_UNIT = 1000


class BlockedNetwork(models.Model):
    """An address or CIDR whose clients may not submit jobs (403 ``blocked``)."""

    network = models.CharField(
        max_length=64, unique=True, help_text="An address or a CIDR, e.g. 203.0.113.7 or 2001:db8::/48."
    )
    reason = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return self.network

    def clean(self) -> None:
        # One spelling per network, so the unique constraint also catches "10.0.0.9/8" vs "10.0.0.0/8".
        try:
            self.network = normalise_network(self.network)
        except ValueError:
            raise ValidationError({"network": "Enter an IP address or a CIDR."}) from None


class ClientNetwork(models.Model):
    """One row per client network (see ``client_network``): when it was first and last seen
    submitting, and the row its submissions lock so they are admitted one at a time."""

    network = models.CharField(max_length=64, unique=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    def __str__(self) -> str:
        return self.network


class ClientUsage(models.Model):
    """What one client network, or one API key (``ApiKey.account``), did on one UTC day. Written when a job is accepted and when
    it finishes, never on status polls; refused requests are counted in Redis instead
    (``ratelimit.services``), so a flood of them costs the database nothing."""

    network = models.CharField(max_length=64)
    day = models.DateField()
    submitted = models.PositiveIntegerField(default=0)
    completed = models.PositiveIntegerField(default=0)
    failed_invalid_prompt = models.PositiveIntegerField(default=0)
    failed_timeout = models.PositiveIntegerField(default=0)
    failed_out_of_memory = models.PositiveIntegerField(default=0)
    failed_inference_error = models.PositiveIntegerField(default=0)
    failed_worker_lost = models.PositiveIntegerField(default=0)
    failed_other = models.PositiveIntegerField(default=0)
    # Run time (started to finished) of completed and failed jobs. Jobs batched into one
    # pipeline call each count the whole call, so this can exceed wall-clock GPU time.
    gpu_seconds = models.FloatField(default=0.0)
    # Compute units of the jobs accepted that day, in thousandths, reserved at submit
    # (ratelimit.services). Integers, so that sums and the budget check are exact in SQLite too.
    cost_milliunits = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ("-day", "network")
        verbose_name = "usage per network or key"
        verbose_name_plural = "usage per network or key"
        indexes = [models.Index(fields=["day", "network"], name="usage_day_network_idx")]
        constraints = [models.UniqueConstraint(fields=["network", "day"], name="usage_network_day_unique")]

    def __str__(self) -> str:
        return f"{self.network} on {self.day}"


class ApiKey(models.Model):
    """An integrator's key: ``ig_<prefix>_<secret>``, of which only the prefix and a SHA-256 of
    the whole key are stored. Policy fields left empty take the ``API_KEY_DEFAULT_*`` settings."""

    name = models.CharField(max_length=255, help_text="Who the key belongs to, for operators.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    submit_rate = models.CharField(
        max_length=32,
        blank=True,
        default="",
        validators=[RegexValidator(r"^[1-9][0-9]*/[0-9]*[smhd]$", "Write a rate as 60/m or 100/10s.")],
        help_text="e.g. 60/m or 100/10s",
    )
    max_active_jobs = models.PositiveIntegerField(null=True, blank=True)
    daily_budget_units = models.PositiveIntegerField(null=True, blank=True, help_text="0 = no budget.")
    max_job_units = models.PositiveIntegerField(null=True, blank=True, help_text="0 = no cap.")
    weight = models.FloatField(null=True, blank=True, help_text="Share in the fair queue; anonymous = 1.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The key's own Standard Webhooks secret, encrypted (core.stored_secrets); after a rotation
    # the previous one also signs until previous_webhook_secret_until.
    webhook_secret_encrypted = models.TextField(blank=True, default="", editable=False)
    previous_webhook_secret_encrypted = models.TextField(blank=True, default="", editable=False)
    previous_webhook_secret_until = models.DateTimeField(null=True, blank=True, editable=False)
    webhook_secret_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ("-created_at",)
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(weight__isnull=True) | models.Q(weight__gt=0),
                name="api_key_weight_positive",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} (ig_{self.prefix}_…)"

    @property
    def account(self) -> str:
        """What its limits, usage and turns in the queue are counted under."""
        return f"{API_KEY_ACCOUNT_PREFIX}{self.prefix}"
