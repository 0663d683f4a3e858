"""The web page's generation form: it parses types only; ``job_submit`` applies the rules, with
the API's field codes, so the page and the API never disagree about what is valid."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from django import forms

from core.errors import ApplicationError
from jobs import selectors
from jobs.models import GenerationJob
from jobs.validation import job_limits, parameter_defaults

CUSTOM_SIZE = "custom"
# The browser's spinner steps, where a number has a natural one.
INPUT_STEPS = {"width": 8, "height": 8, "guidance_scale": 0.5}


@dataclass(frozen=True)
class SizePreset:
    width: int
    height: int
    shape: str

    @property
    def key(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def label(self) -> str:
        return f"{self.shape} · {self.width}\N{MULTIPLICATION SIGN}{self.height}"


# Common Stable Diffusion 1.x shapes; every side is a multiple of 8 (16:9 rounds 910 to 912).
SIZE_PRESETS = (
    SizePreset(512, 512, "Square 1:1"),
    SizePreset(768, 512, "Landscape 3:2"),
    SizePreset(512, 768, "Portrait 2:3"),
    SizePreset(912, 512, "Wide 16:9"),
    SizePreset(512, 912, "Tall 9:16"),
)


def size_presets() -> list[SizePreset]:
    """The presets the configured size limits allow."""
    low, high = job_limits().ranges()["width"]
    return [
        preset
        for preset in SIZE_PRESETS
        if low <= min(preset.width, preset.height) and max(preset.width, preset.height) <= high
    ]


def size_key(*, width: int, height: int) -> str:
    """The preset matching this size, or ``custom``."""
    key = f"{width}x{height}"
    return key if key in {preset.key for preset in size_presets()} else CUSTOM_SIZE


class ModelSelect(forms.Select):
    """Each option carries its model's defaults and bounds, so that the page's script can update
    the form when the model changes; without JavaScript the server applies the same rules."""

    def create_option(self, name: str, value: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        option = super().create_option(name, value, *args, **kwargs)
        spec = selectors.get_model(str(value))
        if spec is not None:
            option["attrs"]["data-defaults"] = json.dumps(spec.defaults)
            option["attrs"]["data-ranges"] = json.dumps(spec.limits.ranges())
        return option


class GenerateForm(forms.Form):
    model = forms.ChoiceField(label="Model", required=False, widget=ModelSelect)
    prompt = forms.CharField(
        label="Describe your image",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "a lighthouse at dusk, oil painting"}),
    )
    negative_prompt = forms.CharField(
        label="Leave out (negative prompt)",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "blurry, text, watermark"}),
    )
    size = forms.ChoiceField(label="Size", required=False)
    width = forms.IntegerField(label="Width", required=False)
    height = forms.IntegerField(label="Height", required=False)
    steps = forms.IntegerField(label="Steps", required=False)
    guidance_scale = forms.FloatField(label="Guidance", required=False)
    seed = forms.IntegerField(label="Seed", required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        # Hints follow the chosen model: the submitted one, the edited job's, else the default.
        chosen = self.data.get("model") or self.initial.get("model") or None
        limits, defaults = job_limits(chosen), parameter_defaults(chosen)
        ranges = limits.ranges()
        model_field = self.fields["model"]
        assert isinstance(model_field, forms.ChoiceField)
        model_field.choices = [(name, name) for name in selectors.model_names()]
        model_field.initial = defaults["model"]
        size_field = self.fields["size"]
        assert isinstance(size_field, forms.ChoiceField)
        size_field.choices = [(preset.key, preset.label) for preset in size_presets()] + [
            (CUSTOM_SIZE, "Custom (width and height below)")
        ]
        size_field.initial = size_key(width=defaults["width"], height=defaults["height"])
        # Browser-side hints only; the server applies the same limits in jobs.validation.
        for name, (low, high) in ranges.items():
            if name in self.fields:
                self.fields[name].initial = defaults[name]
                self.fields[name].widget.attrs.update({"min": low, "max": high})
        for name, step in INPUT_STEPS.items():
            self.fields[name].widget.attrs["step"] = step
        self.fields["seed"].widget.attrs["placeholder"] = "random"
        self.fields["width"].help_text = self.fields["height"].help_text = (
            "{} to {}, a multiple of 8; used with the Custom size.".format(*ranges["width"])
        )
        self.fields["steps"].help_text = "{} to {}: more is slower and finer.".format(*ranges["steps"])
        self.fields["guidance_scale"].help_text = "How closely to follow the prompt."
        self.fields["seed"].help_text = "Same seed and settings, same image. Empty for a random one."
        self.fields["prompt"].widget.attrs["maxlength"] = limits.prompt_max_chars

    @classmethod
    def for_job(cls, job: GenerationJob) -> GenerateForm:
        """The form filled with a job's settings and no seed, so that editing starts from them."""
        size = size_key(width=job.width, height=job.height)
        return cls(initial={**cls.values_of(job), "size": size, "seed": None})

    @classmethod
    def values_of(cls, job: GenerationJob) -> dict[str, Any]:
        """The job's parameters that this form has fields for."""
        return {name: value for name, value in asdict(job.parameters).items() if name in cls.base_fields}

    def submit_arguments(self) -> dict[str, Any]:
        """Keyword arguments for ``jobs.services.job_submit``; call after ``is_valid()``."""
        arguments = dict(self.cleaned_data)
        size = arguments.pop("size")
        preset = next((p for p in size_presets() if p.key == size), None)
        return arguments | ({"width": preset.width, "height": preset.height} if preset else {})

    def add_job_error(self, error: ApplicationError) -> None:
        """Shows a service's field errors beside the fields (or above the form if it has no such
        field), with the cursor in the first field to fix, on a full page load and on an htmx swap."""
        for name, field_errors in error.fields.items():
            for field_error in field_errors:
                self.add_error(
                    name if name in self.fields else None,
                    forms.ValidationError(field_error.message, code=field_error.code),
                )
        first_to_fix = next((name for name in self.fields if name in self.errors), None)
        if first_to_fix is not None:
            self.fields[first_to_fix].widget.attrs["autofocus"] = True

    @property
    def advanced_has_errors(self) -> bool:
        """Whether the collapsed advanced settings must open to show an error."""
        return any(name in self.errors for name in self.fields if name != "prompt")
