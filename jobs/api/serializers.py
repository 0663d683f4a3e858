"""Input and output shapes of the jobs API. Rules live in jobs.validation, not here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, fields
from datetime import datetime
from typing import Any, get_type_hints

from django.conf import settings
from django.urls import reverse
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from generator import GenerationParameters
from generator.models import FAMILIES
from generator.parameters import PARAMETER_NAMES, TEXT_PARAMETERS
from jobs import selectors
from jobs.models import GenerationJob, JobImage
from jobs.validation import parameter_defaults


def absolute_url(url: str, context: Mapping[str, Any]) -> str:
    """``url`` as the client should use it: from the request when there is one (API, page), else
    from ``PUBLIC_BASE_URL`` (webhook payloads). Already absolute URLs (S3) stay as they are."""
    request = context.get("request")
    if request is not None:
        return request.build_absolute_uri(url)
    if settings.PUBLIC_BASE_URL and url.startswith("/"):
        return settings.PUBLIC_BASE_URL + url
    return url


class StrictCharField(serializers.CharField):
    """A JSON string only, as the schema says; DRF alone would take 12 for "12"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only; DRF alone would take "12" and 12.0."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class StrictFloatField(serializers.FloatField):
    """A JSON number only; DRF alone would take "1.5" and true."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return float(super().to_internal_value(data))


# The DRF field for each GenerationParameters type.
INPUT_FIELD_CLASSES: dict[object, type[serializers.Field]] = {
    str: StrictCharField,
    int: StrictIntegerField,
    int | None: StrictIntegerField,
    float: StrictFloatField,
}


class ModelNameField(serializers.CharField):
    """A model's name: a string in the API (``model_unknown`` is a rule, not a type error),
    documented as the enum of the configured names."""


class ModelNameFieldSchema(OpenApiSerializerFieldExtension):
    target_class = ModelNameField

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {
            "type": "string",
            "enum": selectors.model_names(),
            "description": "A model of `GET /api/v1/models`; the deployment's default model when absent.",
        }


def parameter_input_fields() -> dict[str, serializers.Field]:
    """GenerationParameters as API input: types only; the rules (and their codes) are jobs.validation's."""
    types = get_type_hints(GenerationParameters)
    inputs = {}
    for parameter in fields(GenerationParameters):
        name, default = parameter.name, parameter.default
        options: dict[str, Any] = {"required": default is MISSING and name not in parameter_defaults()}
        if default is None:
            options["allow_null"] = True
        elif default is not MISSING:
            options["default"] = default
        if name in TEXT_PARAMETERS:
            # Emptiness and whitespace are rules with their own codes, not type errors.
            options.update(allow_blank=True, trim_whitespace=False)
        field_class = ModelNameField if name == "model" else INPUT_FIELD_CLASSES[types[name]]
        inputs[name] = field_class(**options)
    return inputs


class JobSubmitInputSerializer(serializers.Serializer):
    webhook_url = StrictCharField(required=False, allow_blank=True, default="")
    webhook_events = serializers.ListField(child=StrictCharField(), required=False)
    deadline_seconds = StrictIntegerField(
        required=False,
        allow_null=True,
        help_text="Seconds from now; a job not finished by then fails `deadline_exceeded`. Also `Cancel-After`.",
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        return {**parameter_input_fields(), **super().get_fields()}


class ModelSerializer(serializers.Serializer):
    """A configured model as ``GET /api/v1/models`` lists it (``ModelSpec.describe``)."""

    name = serializers.CharField()
    family = serializers.ChoiceField(choices=list(FAMILIES))
    default = serializers.BooleanField(help_text="The model of a request that names none.")
    defaults = serializers.DictField(
        help_text="What an absent width, height, steps, guidance_scale or scheduler means."
    )
    limits = serializers.DictField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
        help_text="Inclusive [low, high] of each number.",
    )
    negative_prompt = serializers.BooleanField(help_text="Whether the model takes a negative prompt.")
    schedulers = serializers.ListField(
        child=serializers.CharField(), help_text="The schedulers it runs with."
    )
    cost_weight = serializers.FloatField(help_text="Its compute units relative to Stable Diffusion 1.5's.")


class ProgressSerializer(serializers.Serializer):
    step = serializers.IntegerField()
    total = serializers.IntegerField()
    fraction = serializers.FloatField()


class FailureSerializer(serializers.Serializer):
    code = serializers.CharField(
        help_text=(
            "invalid_prompt, timeout, out_of_memory, inference_error, worker_lost, cancelled "
            "or deadline_exceeded."
        )
    )
    message = serializers.CharField()


class TimingsSerializer(serializers.Serializer):
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    queued_seconds = serializers.FloatField(allow_null=True)
    run_seconds = serializers.FloatField(allow_null=True)


class QueueSerializer(serializers.Serializer):
    position = serializers.IntegerField(help_text="1 for the job served next, in the fair order.")
    estimated_start_at = serializers.DateTimeField()
    estimated_finish_at = serializers.DateTimeField()


class JobImageSerializer(serializers.ModelSerializer):
    url = serializers.URLField(read_only=True)

    class Meta:
        model = JobImage
        fields = ("index", "seed", "url")


# The status shape: its fields declare the OpenAPI schema; job_status_body fills them.
class JobSerializer(serializers.ModelSerializer):
    status_url = serializers.URLField(read_only=True)
    progress = ProgressSerializer(read_only=True)
    failure = FailureSerializer(read_only=True, allow_null=True)
    timings = TimingsSerializer(read_only=True)
    images = JobImageSerializer(many=True, read_only=True)
    image_url = serializers.URLField(read_only=True, allow_null=True)
    queue = QueueSerializer(
        read_only=True,
        allow_null=True,
        help_text="Position and estimates while the job is queued; null otherwise.",
    )
    deduplicated = serializers.BooleanField(
        read_only=True, help_text="Answered from an identical completed job's files, without GPU time."
    )
    cost_units = serializers.FloatField(
        read_only=True, help_text="Compute units this job costs (512x512, 25 steps, 1 image = 1)."
    )
    deadline_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="Unfinished by then, the job fails `deadline_exceeded`."
    )

    class Meta:
        model = GenerationJob
        fields = (
            "id",
            "status",
            "status_url",
            *PARAMETER_NAMES,
            "cost_units",
            "deadline_at",
            "progress",
            "queue",
            "deduplicated",
            "failure",
            "warnings",
            "timings",
            "image_url",
            "images",
        )

    def to_representation(self, instance: GenerationJob) -> dict[str, Any]:
        return job_status_body(
            instance,
            images=list(instance.images.all()),
            queue=selectors.job_queue_estimate(job=instance),
            context=self.context,
        )


# DRF's own datetime rendering (ISO 8601, "Z" for UTC), without a serializer per request.
_DATETIME = serializers.DateTimeField()


def job_status_body(
    job: GenerationJob,
    *,
    images: list[JobImage],
    queue: selectors.QueueEstimate | None,
    context: Mapping[str, Any],
) -> dict[str, Any]:
    """A job's status as plain values, in ``JobSerializer``'s shape: built by hand because the
    status GET is the hottest read there is and DRF's field machinery costs more than the query."""

    def moment(value: datetime | None) -> str | None:
        return None if value is None else _DATETIME.to_representation(value)

    def seconds(start: datetime | None, end: datetime | None) -> float | None:
        return round((end - start).total_seconds(), 3) if start and end else None

    fraction = (
        1.0
        if job.status == "completed"
        else (job.progress_step / job.progress_total if job.progress_total else 0.0)
    )
    image_bodies = [
        {"index": image.index, "seed": image.seed, "url": absolute_url(image.file.url, context)}
        for image in images
    ]
    return {
        "id": str(job.id),
        "status": job.status,
        "status_url": absolute_url(reverse("api:job-detail", kwargs={"job_id": job.id}), context),
        **{name: getattr(job, name) for name in PARAMETER_NAMES},
        "cost_units": float(job.cost_units),
        "deadline_at": moment(job.deadline_at),
        "progress": {"step": job.progress_step, "total": job.progress_total, "fraction": round(fraction, 4)},
        "queue": None
        if queue is None
        else {
            "position": queue.position,
            "estimated_start_at": moment(queue.estimated_start_at),
            "estimated_finish_at": moment(queue.estimated_finish_at),
        },
        "deduplicated": job.deduplicated_from_id is not None,
        "failure": {"code": job.failure_code, "message": job.failure_message} if job.failure_code else None,
        "warnings": job.warnings,
        "timings": {
            "created_at": moment(job.created_at),
            "started_at": moment(job.started_at),
            "finished_at": moment(job.finished_at),
            "queued_seconds": seconds(job.created_at, job.started_at),
            "run_seconds": seconds(job.started_at, job.finished_at),
        },
        "image_url": image_bodies[0]["url"] if image_bodies else None,
        "images": image_bodies,
    }


class JobSubmittedSerializer(JobSerializer):
    """The submit's answer: the job, and once only, an anonymous webhook receiver's secret."""

    webhook_secret = serializers.SerializerMethodField(
        help_text=(
            "An anonymous submit with `webhook_url`: the Standard Webhooks secret (`whsec_…`) its "
            "deliveries are signed with, shown in this answer only (and a replay of it with the same "
            "`Idempotency-Key`). Null with an API key (its own secret signs) or without a webhook."
        )
    )

    class Meta(JobSerializer.Meta):
        fields = (*JobSerializer.Meta.fields, "webhook_secret")

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_webhook_secret(self, job: GenerationJob) -> str | None:
        return selectors.job_own_webhook_secret(job=job)

    def to_representation(self, instance: GenerationJob) -> dict[str, Any]:
        return {**super().to_representation(instance), "webhook_secret": self.get_webhook_secret(instance)}


class FieldErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable and machine-readable; see each response for its codes.")
    message = serializers.CharField(help_text="For humans; may change.")
    # DRF's metaclass moves declared fields off the class, so this does not shadow
    # Serializer.fields at runtime; the stubs cannot know that.
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=FieldErrorSerializer()),
        required=False,
        help_text="validation_error only: the broken rules by field name.",
    )
    retry_after = serializers.IntegerField(required=False, help_text="Seconds; also in Retry-After.")
    request_id = serializers.CharField(
        required=False, help_text="This request's id: also its X-Request-ID header and in its log lines."
    )


class ErrorSerializer(serializers.Serializer):
    """The one error shape of the whole API."""

    error = ErrorDetailSerializer()
