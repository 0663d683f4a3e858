"""Every generation parameter, declared once with its limits; shared by web and worker (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

# "default" keeps the scheduler the model was saved with; the others replace it per batch.
# "flow_euler" is flow matching's Euler, the one scheduler SD 3.x and FLUX.1 run with.
SCHEDULER_NAMES: tuple[str, ...] = ("default", "pndm", "euler", "euler_a", "dpmpp_2m", "ddim", "flow_euler")
SEED_MAX = 2**32 - 1
MAX_IMAGES_PER_JOB = 4
# The VAE halves each side three times: sizes are whole multiples of 8.
SIZE_MULTIPLE = 8
# Requests equal in these can share one pipeline call.
BATCH_KEY_FIELDS = ("model", "width", "height", "steps", "guidance_scale", "scheduler")
# Free text: whitespace runs are collapsed and emptiness is a rule, not a type error.
TEXT = {"text": True}


@dataclass(frozen=True, kw_only=True)
class GenerationParameters:
    """What to generate. ``seed`` None asks for a random one, drawn when the job is stored."""

    prompt: str = field(metadata=TEXT)
    negative_prompt: str = field(default="", metadata=TEXT)
    # No defaults here: each model of the deployment's registry sets them.
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int | None = None
    scheduler: str = "default"
    num_images: int = 1
    # A name in the deployment's model registry; it has no default here either.
    model: str

    @property
    def batch_key(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in BATCH_KEY_FIELDS)

    def image_seeds(self) -> range:
        """Image ``index`` is made from ``seed + index``: its pictures depend on its own seed only."""
        if self.seed is None:
            raise ValueError("a random seed is drawn when the job is stored, before it runs")
        return range(self.seed, self.seed + self.num_images)


PARAMETER_NAMES = tuple(parameter.name for parameter in fields(GenerationParameters))
TEXT_PARAMETERS = tuple(parameter.name for parameter in fields(GenerationParameters) if parameter.metadata)


@dataclass(frozen=True, kw_only=True)
class ParameterLimits:
    """The configurable limits; ``ranges`` and ``violations`` are what every face checks and shows."""

    prompt_max_chars: int
    min_size: int
    max_size: int
    max_steps: int
    min_guidance: float
    max_guidance: float

    def ranges(self) -> dict[str, tuple[float, float]]:
        """Inclusive bounds of each number, as the validation, the form and the API schema use them."""
        return {
            "width": (self.min_size, self.max_size),
            "height": (self.min_size, self.max_size),
            "steps": (1, self.max_steps),
            "guidance_scale": (self.min_guidance, self.max_guidance),
            "seed": (0, SEED_MAX),
            "num_images": (1, MAX_IMAGES_PER_JOB),
        }

    def violations(self, params: GenerationParameters) -> list[tuple[str, str, str]]:
        """Every broken rule as (parameter, code, message), in parameter order."""
        found: list[tuple[str, str, str]] = []
        for name in TEXT_PARAMETERS:
            text = getattr(params, name)
            if name == "prompt" and not text.strip():
                found.append((name, "prompt_empty", "Describe the image you want."))
            elif len(text) > self.prompt_max_chars:
                found.append((name, "prompt_too_long", f"Use at most {self.prompt_max_chars} characters."))
        for name, (low, high) in self.ranges().items():
            value = getattr(params, name)
            if name in ("width", "height") and value % SIZE_MULTIPLE:
                found.append(
                    (name, "size_not_multiple_of_8", f"{name.capitalize()} must be a multiple of 8.")
                )
            if value is not None and not low <= value <= high:
                code, message = RANGE_ERRORS[name]
                found.append((name, code, message.format(low=low, high=high)))
        if params.scheduler not in SCHEDULER_NAMES:
            found.append(
                ("scheduler", "scheduler_unknown", f"Scheduler must be one of {', '.join(SCHEDULER_NAMES)}.")
            )
        return sorted(found, key=lambda violation: PARAMETER_NAMES.index(violation[0]))


# Each range's error code and message, formatted with its bounds.
RANGE_ERRORS = {
    "width": ("size_out_of_range", "Width must be between {low} and {high}."),
    "height": ("size_out_of_range", "Height must be between {low} and {high}."),
    "steps": ("steps_out_of_range", "Steps must be between {low} and {high}."),
    "guidance_scale": ("guidance_out_of_range", "Guidance must be between {low} and {high}."),
    "seed": ("seed_out_of_range", "Seed must be between {low} and {high}."),
    "num_images": ("num_images_out_of_range", "Ask for {low} to {high} images."),
}
