"""Input and output shapes of the jobs API. Rules live in jobs.validation, not here."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers

from jobs.models import GenerationJob, JobImage


class JobSubmitInputSerializer(serializers.Serializer):
    # Types only: the rules (and their stable codes) are jobs.validation's, shared with the page.
    prompt = serializers.CharField(allow_blank=True, trim_whitespace=False)
    negative_prompt = serializers.CharField(
        allow_blank=True, trim_whitespace=False, required=False, default=""
    )
    width = serializers.IntegerField(required=False)
    height = serializers.IntegerField(required=False)
    steps = serializers.IntegerField(required=False)
    guidance_scale = serializers.FloatField(required=False)
    seed = serializers.IntegerField(required=False, allow_null=True)
    scheduler = serializers.CharField(required=False, default="default")
    num_images = serializers.IntegerField(required=False, default=1)
    webhook_url = serializers.CharField(required=False, allow_blank=True, default="")
    webhook_events = serializers.ListField(child=serializers.CharField(), required=False)


class JobImageSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = JobImage
        fields = ("index", "seed", "url")

    def get_url(self, image: JobImage) -> str:
        url = image.file.url
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request is not None else url


class JobSerializer(serializers.ModelSerializer):
    status_url = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    failure = serializers.SerializerMethodField()
    timings = serializers.SerializerMethodField()
    images = JobImageSerializer(many=True, read_only=True)
    image_url = serializers.SerializerMethodField()

    class Meta:
        model = GenerationJob
        fields = (
            "id",
            "status",
            "status_url",
            "prompt",
            "negative_prompt",
            "width",
            "height",
            "steps",
            "guidance_scale",
            "seed",
            "scheduler",
            "num_images",
            "progress",
            "failure",
            "warnings",
            "timings",
            "image_url",
            "images",
        )

    def get_status_url(self, job: GenerationJob) -> str:
        url = reverse("api:job-detail", kwargs={"job_id": job.id})
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request is not None else url

    def get_progress(self, job: GenerationJob) -> dict[str, Any]:
        fraction = job.progress_step / job.progress_total if job.progress_total else 0.0
        if job.status == "completed":
            fraction = 1.0
        return {"step": job.progress_step, "total": job.progress_total, "fraction": round(fraction, 4)}

    def get_failure(self, job: GenerationJob) -> dict[str, str] | None:
        if not job.failure_code:
            return None
        return {"code": job.failure_code, "message": job.failure_message}

    def get_timings(self, job: GenerationJob) -> dict[str, Any]:
        def seconds(start: Any, end: Any) -> float | None:
            return round((end - start).total_seconds(), 3) if start and end else None

        return {
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "queued_seconds": seconds(job.created_at, job.started_at),
            "run_seconds": seconds(job.started_at, job.finished_at),
        }

    def get_image_url(self, job: GenerationJob) -> str | None:
        images = JobImageSerializer(job.images.all(), many=True, context=self.context).data
        return images[0]["url"] if images else None
