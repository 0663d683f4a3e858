"""What the web page tells a person for each error or failure code: what happened and what to
do next; an unknown code gets a general message, never a blank box."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class NextStep(StrEnum):
    """Which button a problem offers beside its message."""

    EDIT = "edit"  # change the prompt or settings in the form
    RETRY = "retry"  # the same request again
    LIGHTER = "lighter"  # a smaller, cheaper version of the same request
    WAIT = "wait"  # nothing to press until the countdown ends


@dataclass(frozen=True)
class Problem:
    code: str
    title: str
    action: str
    next_step: NextStep
    known: bool = True


_PROBLEMS = {
    problem.code: problem
    for problem in (
        Problem(
            "validation_error",
            "Some settings need a change",
            "Fix the fields marked below, then generate again.",
            NextStep.EDIT,
        ),
        Problem(
            "invalid_prompt",
            "This prompt can't be used",
            "Change the text of your prompt, then generate again.",
            NextStep.EDIT,
        ),
        Problem(
            "rate_limited",
            "You're generating faster than allowed",
            "Wait for the countdown to finish, then generate again.",
            NextStep.WAIT,
        ),
        Problem(
            "too_many_active_jobs",
            "You already have images in progress",
            "Wait for one of them to finish, or cancel one, then generate again.",
            NextStep.WAIT,
        ),
        Problem(
            "daily_quota_exceeded",
            "You've reached today's limit",
            "Your allowance renews when the countdown ends.",
            NextStep.WAIT,
        ),
        Problem(
            "blocked",
            "Generating isn't available from your network",
            "If you think this is a mistake, contact the people who run this service.",
            NextStep.WAIT,
        ),
        Problem(
            "queue_full",
            "The queue is full right now",
            "Try again in a minute, when some images have finished.",
            NextStep.RETRY,
        ),
        Problem(
            "timeout", "This image took too long", "Try a smaller size or fewer steps.", NextStep.LIGHTER
        ),
        Problem(
            "out_of_memory",
            "The GPU ran out of memory for this image",
            "Try a smaller size or fewer steps.",
            NextStep.LIGHTER,
        ),
        Problem(
            "inference_error",
            "Something went wrong while generating",
            "This is usually temporary: try again.",
            NextStep.RETRY,
        ),
        Problem(
            "worker_lost",
            "The machine making your image stopped",
            "Nothing is wrong with your request: try again.",
            NextStep.RETRY,
        ),
        Problem(
            "cancelled",
            "Cancelled",
            "Nothing was generated. Generate again when you're ready.",
            NextStep.RETRY,
        ),
        Problem(
            "not_found",
            "There is no image here",
            "The link may be mistyped, or the image was deleted. Start a new one.",
            NextStep.EDIT,
        ),
        Problem(
            "job_already_finished",
            "This image already finished",
            "It can no longer be cancelled.",
            NextStep.EDIT,
        ),
        Problem("csrf_failed", "Your page has expired", "Reload the page, then try again.", NextStep.EDIT),
    )
}


def problem_for(code: str) -> Problem:
    unknown = Problem(code, "Something went wrong", "Try again in a moment.", NextStep.RETRY, known=False)
    return _PROBLEMS.get(code, unknown)


def duration_text(seconds: int) -> str:
    """``45 s``, ``4 min 5 s``, ``3 h 12 min``: the same format static/js/app.js counts down in."""
    seconds = max(seconds, 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"
