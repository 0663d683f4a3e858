"""Domain errors of the jobs app. Every face (API, page, admin) turns them into responses.

Each carries a stable machine-readable ``code``; the API renders it in its JSON error shape
and the web page picks its human message by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FieldError:
    code: str
    message: str


@dataclass
class JobError(Exception):
    code: str
    message: str
    http_status: int = 400
    fields: dict[str, list[FieldError]] = field(default_factory=dict)
    retry_after: int | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def invalid_parameters(fields: dict[str, list[FieldError]]) -> JobError:
    return JobError(code="validation_error", message="Some parameters are invalid.", fields=fields)


def job_not_found() -> JobError:
    return JobError(code="not_found", message="No job with this id.", http_status=404)


def job_already_finished(status: str) -> JobError:
    return JobError(code="job_already_finished", message=f"The job is already {status}.", http_status=409)


def job_not_retryable(status: str) -> JobError:
    return JobError(
        code="job_not_retryable",
        message=f"Only failed jobs can be retried; this one is {status}.",
        http_status=409,
    )


def idempotency_conflict() -> JobError:
    return JobError(
        code="idempotency_conflict",
        message="This Idempotency-Key was already used with a different request body.",
        http_status=409,
    )


def idempotency_key_invalid(max_length: int) -> JobError:
    return JobError(
        code="idempotency_key_invalid",
        message=f"An Idempotency-Key must be 1 to {max_length} printable ASCII characters.",
    )


def queue_full(retry_after: int) -> JobError:
    return JobError(
        code="queue_full",
        message="Too many jobs are waiting; try again later.",
        http_status=503,
        retry_after=retry_after,
    )
