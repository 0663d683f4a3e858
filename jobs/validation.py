"""The rules a generation request must meet, shared by the API, the web form and the worker."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

from django.conf import settings

from core.errors import FieldError, invalid_parameters
from generator import GenerationParameters, ParameterLimits
from generator.parameters import TEXT_PARAMETERS


def job_limits() -> ParameterLimits:
    return ParameterLimits(**settings.JOB_LIMITS)


def parameter_defaults() -> dict[str, Any]:
    """What an absent parameter means: the deployment's ``JOB_DEFAULTS``, else the declared default."""
    declared = {
        field.name: field.default for field in fields(GenerationParameters) if field.default is not MISSING
    }
    return {**declared, **settings.JOB_DEFAULTS}


def submitted_parameters(given: dict[str, Any]) -> GenerationParameters:
    """The parameters a client asked for, None meaning "the default" (a random seed for ``seed``).
    A text is measured as sent, before its whitespace is collapsed, as the API schema says."""
    values: dict[str, Any] = {
        **parameter_defaults(),
        **{name: value for name, value in given.items() if value is not None},
    }
    max_chars = job_limits().prompt_max_chars
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


def validate_parameters(params: GenerationParameters) -> None:
    """Raises a ``validation_error`` ApplicationError naming every broken rule by field and code."""
    errors: dict[str, list[FieldError]] = {}
    for name, code, message in job_limits().violations(params):
        errors.setdefault(name, []).append(FieldError(code=code, message=message))
    if errors:
        raise invalid_parameters(errors)
