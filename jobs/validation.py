"""The rules a generation request must meet, shared by the API, the web form and the worker."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from core.errors import FieldError, invalid_parameters
from generator import SCHEDULER_NAMES

SEED_MAX = 2**32 - 1
MAX_IMAGES_PER_JOB = 4


@dataclass(frozen=True, kw_only=True)
class JobParameters:
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int | None
    scheduler: str
    num_images: int


def normalise_prompt(text: str) -> str:
    """Collapses runs of whitespace: they carry no meaning for the text encoder."""
    return " ".join(text.split())


def validate_parameters(params: JobParameters) -> None:
    """Raises a ``validation_error`` ApplicationError naming every broken rule by field and code."""
    limits = settings.JOB_LIMITS
    errors: dict[str, list[FieldError]] = {}

    def reject(name: str, code: str, message: str) -> None:
        errors.setdefault(name, []).append(FieldError(code=code, message=message))

    if not params.prompt.strip():
        reject("prompt", "prompt_empty", "Describe the image you want.")
    elif len(params.prompt) > limits["prompt_max_chars"]:
        reject("prompt", "prompt_too_long", f"Use at most {limits['prompt_max_chars']} characters.")
    if len(params.negative_prompt) > limits["prompt_max_chars"]:
        reject("negative_prompt", "prompt_too_long", f"Use at most {limits['prompt_max_chars']} characters.")
    for name in ("width", "height"):
        value = getattr(params, name)
        if value % 8:
            reject(name, "size_not_multiple_of_8", f"{name.capitalize()} must be a multiple of 8.")
        if not limits["min_size"] <= value <= limits["max_size"]:
            reject(
                name,
                "size_out_of_range",
                f"{name.capitalize()} must be between {limits['min_size']} and {limits['max_size']}.",
            )
    if not 1 <= params.steps <= limits["max_steps"]:
        reject("steps", "steps_out_of_range", f"Steps must be between 1 and {limits['max_steps']}.")
    if not limits["min_guidance"] <= params.guidance_scale <= limits["max_guidance"]:
        reject(
            "guidance_scale",
            "guidance_out_of_range",
            f"Guidance must be between {limits['min_guidance']} and {limits['max_guidance']}.",
        )
    if params.seed is not None and not 0 <= params.seed <= SEED_MAX:
        reject("seed", "seed_out_of_range", f"Seed must be between 0 and {SEED_MAX}.")
    if params.scheduler not in SCHEDULER_NAMES:
        reject("scheduler", "scheduler_unknown", f"Scheduler must be one of {', '.join(SCHEDULER_NAMES)}.")
    if not 1 <= params.num_images <= MAX_IMAGES_PER_JOB:
        reject("num_images", "num_images_out_of_range", f"Ask for 1 to {MAX_IMAGES_PER_JOB} images.")
    if errors:
        raise invalid_parameters(errors)
