"""The submit schema's limits, from the rules the server enforces (``jobs.validation.widest_limits``),
and the links from a submit's answer to the job's status and cancel: a drf-spectacular
postprocessing hook, so a client generated from the schema knows what will be refused."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from generator.parameters import SCHEDULER_NAMES, SIZE_MULTIPLE
from jobs.deadlines import DEADLINE_MIN_SECONDS
from jobs.validation import widest_limits
from webhooks.models import WebhookEvent
from webhooks.services import MAX_URL_LENGTH

SUBMIT_BODY = "JobSubmitInputRequest"
# Some character that is not whitespace and no NUL anywhere, which JSON text fields refuse.
NOT_ONLY_WHITESPACE = r"^[^\x00]*[^\x00\s][^\x00]*$"
NO_NUL = r"^[^\x00]*$"


def submit_body_limits() -> dict[str, dict[str, Any]]:
    """Per submit field, the JSON Schema keywords of every limit jobs.validation enforces."""
    limits = widest_limits()
    declared: dict[str, dict[str, Any]] = {
        name: {"minimum": low, "maximum": high} for name, (low, high) in limits.ranges().items()
    }
    for name in ("width", "height"):
        declared[name]["multipleOf"] = SIZE_MULTIPLE
    declared["prompt"] = {
        "minLength": 1,
        "maxLength": limits.prompt_max_chars,
        "pattern": NOT_ONLY_WHITESPACE,
    }
    declared["negative_prompt"] = {"maxLength": limits.prompt_max_chars, "pattern": NO_NUL}
    declared["scheduler"] = {"enum": list(SCHEDULER_NAMES)}
    declared["deadline_seconds"] = {
        "minimum": DEADLINE_MIN_SECONDS,
        "maximum": settings.JOB_DEADLINE_MAX_SECONDS,
    }
    declared["webhook_url"] = {"maxLength": MAX_URL_LENGTH, "pattern": NO_NUL}
    return declared


def declare_enforced_limits(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    properties = result["components"]["schemas"][SUBMIT_BODY]["properties"]
    for name, keywords in submit_body_limits().items():
        properties[name].update(keywords)
    properties["webhook_events"]["items"]["enum"] = list(WebhookEvent.values)
    job_id = {"job_id": "$response.body#/id"}
    result["paths"]["/api/v1/jobs"]["post"]["responses"]["202"]["links"] = {
        "status": {"operationId": "jobs_status", "parameters": job_id, "description": "The job's status."},
        "cancel": {"operationId": "jobs_cancel", "parameters": job_id, "description": "Cancel the job."},
    }
    return result
