"""Helpers for the web page's tests: parsed HTML and the headers htmx sends."""

from __future__ import annotations

from typing import Any

from bs4 import BeautifulSoup
from django.http import HttpResponse

HTMX = {"HX-Request": "true"}

# A request the tiny model serves in well under a second.
VALID_FORM = {
    "prompt": "a lighthouse at dusk",
    "negative_prompt": "",
    "size": "custom",
    "width": "96",
    "height": "64",
    "steps": "4",
    "guidance_scale": "7.5",
    "seed": "",
}


def as_api_body(form: dict[str, str]) -> dict[str, Any]:
    """The same request as the API takes it: JSON numbers, not the form's strings."""
    numbers: dict[str, type] = {
        "width": int,
        "height": int,
        "steps": int,
        "seed": int,
        "guidance_scale": float,
    }
    return {
        name: (numbers[name](value) if value != "" else None) if name in numbers else value
        for name, value in form.items()
        if name != "size"
    }


def html(response: HttpResponse) -> BeautifulSoup:
    return BeautifulSoup(response.content.decode(), "html.parser")
