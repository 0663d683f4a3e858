"""The jobs app's errors, by code; the faces map codes to HTTP statuses (jobs/api/errors.py)."""

from __future__ import annotations

from core.errors import ApplicationError


def job_not_found() -> ApplicationError:
    return ApplicationError(code="not_found", message="No job with this id.")


def job_already_finished(status: str) -> ApplicationError:
    return ApplicationError(code="job_already_finished", message=f"The job is already {status}.")


def job_not_retryable(status: str) -> ApplicationError:
    return ApplicationError(
        code="job_not_retryable", message=f"Only failed jobs can be retried; this one is {status}."
    )


def idempotency_conflict() -> ApplicationError:
    return ApplicationError(
        code="idempotency_conflict",
        message="This Idempotency-Key was already used with a different request body.",
    )


def idempotency_key_invalid(max_length: int) -> ApplicationError:
    return ApplicationError(
        code="idempotency_key_invalid",
        message=f"An Idempotency-Key must be 1 to {max_length} printable ASCII characters.",
    )


def queue_full(retry_after: int) -> ApplicationError:
    return ApplicationError(
        code="queue_full", message="Too many jobs are waiting; try again later.", retry_after=retry_after
    )


def cancel_after_invalid(value: str, min_seconds: int, max_seconds: int) -> ApplicationError:
    return ApplicationError(
        code="cancel_after_invalid",
        message=(
            f"Cancel-After {value[:64]!r} is not a duration such as 90s, 5m or 1m30s "
            f"from {min_seconds} to {max_seconds} seconds."
        ),
    )


def too_many_streams(limit: int, retry_after: int) -> ApplicationError:
    return ApplicationError(
        code="too_many_streams",
        message=f"This client already holds {limit} open event streams; close one first.",
        retry_after=retry_after,
    )


def preview_not_found() -> ApplicationError:
    return ApplicationError(code="preview_not_found", message="This job has no preview (yet, or any more).")
