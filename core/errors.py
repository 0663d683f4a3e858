"""The one application error: a stable ``code`` each face (API, page, admin) turns into a
response; it carries no HTTP status, the faces map codes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FieldError:
    code: str
    message: str


@dataclass
class ApplicationError(Exception):
    code: str
    message: str
    fields: dict[str, list[FieldError]] = field(default_factory=dict)
    retry_after: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def invalid_parameters(fields: dict[str, list[FieldError]]) -> ApplicationError:
    return ApplicationError(code="validation_error", message="Some parameters are invalid.", fields=fields)
