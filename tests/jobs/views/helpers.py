"""Helpers for the web page's tests: parsed HTML and the headers htmx sends."""

from __future__ import annotations

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


def html(response: HttpResponse) -> BeautifulSoup:
    return BeautifulSoup(response.content.decode(), "html.parser")
