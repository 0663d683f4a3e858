"""The rules a generation request must meet, shared by the API, the web form and the worker.
Each model of the registry has its own defaults and limits (``selectors.get_model``)."""

from __future__ import annotations

from dataclasses import MISSING, fields, replace
from typing import Any

from django.conf import settings

from core.errors import FieldError, invalid_parameters
from generator import GenerationParameters, ParameterLimits
from generator.models import ModelSpec
from generator.parameters import TEXT_PARAMETERS
from jobs import selectors


def job_limits(model: str | None = None) -> ParameterLimits:
    """The limits of ``model`` (the default model for None or an unknown name)."""
    spec = selectors.get_model(model) or selectors.get_model()
    return spec.limits if spec else ParameterLimits(**settings.JOB_LIMITS)


def widest_limits() -> ParameterLimits:
    """Bounds that hold every configured model's limits: what the API schema declares."""
    limits = [spec.limits for spec in selectors.model_registry().values()]
    return replace(
        ParameterLimits(**settings.JOB_LIMITS),
        max_size=max(limit.max_size for limit in limits),
        max_steps=max(limit.max_steps for limit in limits),
    )


def parameter_defaults(model: str | None = None) -> dict[str, Any]:
    """What an absent parameter means: the model's defaults, else the declared default."""
    declared = {
        field.name: field.default for field in fields(GenerationParameters) if field.default is not MISSING
    }
    spec = selectors.get_model(model) or selectors.get_model()
    chosen = model or settings.GENERATOR_DEFAULT_MODEL
    return {**declared, **(spec.defaults if spec else settings.JOB_DEFAULTS), "model": chosen}


def submitted_parameters(given: dict[str, Any]) -> GenerationParameters:
    """The parameters a client asked for, None meaning "the default" (a random seed for ``seed``).
    A text is measured as sent, before its whitespace is collapsed, as the API schema says."""
    # An empty model (the page's "default" choice) is no model named.
    values: dict[str, Any] = {
        **parameter_defaults(given.get("model") or None),
        **{name: value for name, value in given.items() if value is not None and name != "model"},
    }
    max_chars = job_limits(values["model"]).prompt_max_chars
    too_long = [name for name in TEXT_PARAMETERS if len(values.get(name) or "") > max_chars]
    if too_long:
        message = f"Use at most {max_chars} characters."
        raise invalid_parameters(
            {name: [FieldError(code="prompt_too_long", message=message)] for name in too_long}
        )
    texts = {name: normalise_prompt(values[name]) for name in TEXT_PARAMETERS if name in values}
    return GenerationParameters(**{**values, **texts})


def normalise_prompt(text: str) -> str:
    """Collapses runs of whitespace: they carry no meaning for the text encoder."""
    return " ".join(text.split())


def validate_parameters(params: GenerationParameters) -> ModelSpec:
    """The request's model, or a ``validation_error`` ApplicationError naming every broken rule
    by field and code."""
    spec = selectors.get_model(params.model)
    if spec is None:
        violations = [
            ("model", "model_unknown", f"Model must be one of {', '.join(selectors.model_names())}."),
            *job_limits().violations(params),
        ]
    else:
        violations = spec.violations(params)
    errors: dict[str, list[FieldError]] = {}
    for name, code, message in violations:
        errors.setdefault(name, []).append(FieldError(code=code, message=message))
    if errors or spec is None:
        raise invalid_parameters(errors)
    return spec
