"""``POST /v1/images/generations`` as the OpenAI Images API answers it, so that OpenAI client
libraries and tools work unchanged: the same submit service as ``/api/v1``, then a wait for
the job that holds no thread, then the images as URLs or base64."""

from __future__ import annotations

import base64
import json
import logging
import re
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import AuthenticationFailed

from core.errors import ApplicationError
from core.logging import log_event
from core.request_threads import on_request_threads
from jobs import selectors, services
from jobs.api.errors import http_status
from jobs.api.serializers import absolute_url
from jobs.live.wait import wait_for_job_end
from jobs.models import FailureCode, GenerationJob, JobImage, JobStatus
from ratelimit.authentication import bearer_caller

logger = logging.getLogger(__name__)

REQUEST_FIELDS = {"model", "prompt", "n", "size", "response_format", "user", "quality", "style"}
RESPONSE_FORMATS = ("url", "b64_json")
SIZE_PATTERN = re.compile(r"(?P<width>[1-9][0-9]{0,4})x(?P<height>[1-9][0-9]{0,4})")
# Our parameter names as OpenAI's request names them, for the error's ``param``.
OPENAI_PARAM_NAMES = {"width": "size", "height": "size", "num_images": "n"}
# OpenAI's error ``type`` by HTTP status; its clients choose the exception class by status alone.
ERROR_TYPES = {401: "invalid_request_error", 403: "permission_error", 429: "requests", 503: "server_error"}
QUOTA_CODES = ("daily_quota_exceeded", "daily_budget_exceeded")


class OpenAIError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self, *, status: int, code: str, message: str, param: str | None = None, error_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.error_type = error_type or ERROR_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        self.headers: dict[str, str] = {}

    def response(self) -> JsonResponse:
        error = {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}
        return JsonResponse({"error": error}, status=self.status, headers=self.headers)

    @classmethod
    def from_application_error(cls, error: ApplicationError) -> OpenAIError:
        field, problems = next(iter(error.fields.items()), (None, []))
        status = http_status(error)
        converted = cls(
            status=status,
            code=problems[0].code if problems else error.code,
            message=problems[0].message if problems else error.message,
            param=OPENAI_PARAM_NAMES.get(field, field) if field else None,
            error_type="insufficient_quota" if error.code in QUOTA_CODES else None,
        )
        if error.retry_after is not None:
            converted.headers["Retry-After"] = str(error.retry_after)
        return converted


def known_model(requested: str | None) -> str | None:
    """The registry's model a request names; None for "default" or none named (the deployment's
    default model); any other name is ``model_not_found``."""
    if requested in (None, "default"):
        return None
    if selectors.get_model(requested) is not None:
        return requested
    raise OpenAIError(
        status=400, code="model_not_found", param="model", message=f"The model '{requested}' does not exist."
    )


@csrf_exempt
async def image_generations(request: HttpRequest) -> JsonResponse:
    try:
        return await _image_generations(request)
    except OpenAIError as error:
        return error.response()
    except ApplicationError as error:
        return OpenAIError.from_application_error(error).response()
    except Exception:
        # An OpenAI client reads any error body as its shape; ours must never be an HTML page.
        logger.exception("openai.images.failed")
        return OpenAIError(
            status=500, code="internal_error", message="Something went wrong on our side."
        ).response()


async def _image_generations(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        raise OpenAIError(status=405, code="method_not_allowed", message="Send a POST.")
    fields = _request_fields(request)
    try:
        caller = await on_request_threads(bearer_caller)(request)
    except AuthenticationFailed as error:
        raise OpenAIError(status=401, code="invalid_api_key", message=str(error.detail)) from None
    job = await on_request_threads(services.job_submit)(
        client_ip=caller.client_ip, caller=caller, **fields["job"]
    )
    await wait_for_job_end(job.id, timeout_seconds=settings.OPENAI_IMAGES_WAIT_SECONDS)
    job, images = await on_request_threads(selectors.job_with_images_get)(job_id=job.id)
    _raise_unless_completed(request, job)
    log_event(
        logger.info, "openai.images.answered", job_id=str(job.id), response_format=fields["response_format"]
    )
    if fields["response_format"] == "b64_json":
        data = [{"b64_json": await on_request_threads(_base64_file)(image)} for image in images]
    else:
        data = [{"url": absolute_url(image.file.url, {"request": request})} for image in images]
    return JsonResponse({"created": int(job.created_at.timestamp()), "data": data})


def _request_fields(request: HttpRequest) -> dict[str, Any]:
    """The request's fields as ``job_submit`` parameters, or an OpenAI-shaped 400."""
    try:
        body = json.loads(request.body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise OpenAIError(status=400, code="invalid_json", message="The body must be a JSON object.")
    unknown = sorted(body.keys() - REQUEST_FIELDS)
    if unknown:
        raise OpenAIError(
            status=400,
            code="unknown_parameter",
            param=unknown[0],
            message=f"Unrecognized request argument supplied: {unknown[0]}",
        )
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise OpenAIError(
            status=400,
            code="missing_required_parameter",
            param="prompt",
            message="'prompt' must be a string.",
        )
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise OpenAIError(
            status=400, code="invalid_value", param="model", message="'model' must be a string."
        )
    model = known_model(model)
    count = body.get("n", 1)
    if not isinstance(count, int) or isinstance(count, bool):
        raise OpenAIError(status=400, code="invalid_value", param="n", message="'n' must be an integer.")
    response_format = body.get("response_format") or "url"
    if response_format not in RESPONSE_FORMATS:
        raise OpenAIError(
            status=400,
            code="invalid_value",
            param="response_format",
            message="'response_format' must be 'url' or 'b64_json'.",
        )
    job: dict[str, Any] = {"prompt": prompt, "num_images": count, "model": model}
    if body.get("size") not in (None, "auto"):
        size = SIZE_PATTERN.fullmatch(str(body["size"]))
        if size is None:
            raise OpenAIError(
                status=400, code="invalid_value", param="size", message="'size' must look like '512x512'."
            )
        job.update(width=int(size["width"]), height=int(size["height"]))
    return {"job": job, "response_format": response_format}


def _raise_unless_completed(request: HttpRequest, job: GenerationJob) -> None:
    status_url = absolute_url(reverse("api:job-detail", kwargs={"job_id": job.id}), {"request": request})
    if job.status == JobStatus.COMPLETED:
        return
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        error = OpenAIError(
            status=504,
            code="job_not_finished",
            message=(
                f"Job {job.id} is still {job.status} after {settings.OPENAI_IMAGES_WAIT_SECONDS:g} seconds; "
                f"it goes on: GET {status_url} for its images."
            ),
        )
        error.headers["Location"] = status_url
    else:
        error = OpenAIError(
            status=400 if job.failure_code == FailureCode.INVALID_PROMPT else 500,
            code=job.failure_code,
            message=f"Job {job.id} {job.status}: {job.failure_message} ({status_url})",
        )
    # OpenAI clients retry a 5xx by sending the request again: another job, not this one.
    error.headers["x-should-retry"] = "false"
    raise error


def _base64_file(image: JobImage) -> str:
    with image.file.open("rb") as file:
        return base64.b64encode(file.read()).decode()
