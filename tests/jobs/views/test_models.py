"""The page's model select: each model's defaults and bounds, and its rules beside the fields."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from jobs.models import GenerationJob
from tests.jobs.views.helpers import VALID_FORM, html

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_models(settings: Any) -> None:
    settings.GENERATOR_MODELS = {
        "tiny-sd": {"source": settings.GENERATOR_MODEL, "family": "sd15"},
        "flux": {
            "source": "/models/flux-schnell",
            "family": "flux",
            "defaults": {"width": 256, "height": 256, "steps": 4, "guidance_scale": 0.0},
            "limits": {"max_size": 512, "max_steps": 8},
        },
    }
    settings.GENERATOR_DEFAULT_MODEL = "tiny-sd"


@pytest.mark.usefixtures("two_models")
def test_the_model_select_offers_every_model_with_its_defaults_and_bounds(client: Client) -> None:
    page = html(client.get("/"))

    options = {option["value"]: option for option in page.select("select[name=model] option")}
    assert list(options) == ["tiny-sd", "flux"]
    assert options["tiny-sd"].has_attr("selected")
    assert json.loads(options["flux"]["data-defaults"])["steps"] == 4
    assert json.loads(options["flux"]["data-ranges"])["width"] == [64, 512]


@pytest.mark.usefixtures("two_models")
def test_a_submitted_model_is_stored_and_its_own_rules_show_beside_the_fields(client: Client) -> None:
    client.post("/", {**VALID_FORM, "model": "flux", "steps": "4"})
    rejected = html(
        client.post("/", {**VALID_FORM, "model": "flux", "negative_prompt": "blurry", "steps": "9"})
    )

    assert GenerationJob.objects.get().model == "flux"
    assert (
        rejected.select_one("#id_negative_prompt_error").get_text(strip=True)
        == "Model flux takes no negative prompt."
    )
    assert rejected.select_one("#id_steps_error").get_text(strip=True) == "Steps must be between 1 and 8."
    # Without JavaScript the re-shown form hints the chosen model's bounds.
    assert rejected.select_one("[name=steps]")["max"] == "8"
    assert rejected.select_one("select[name=model] option[selected]")["value"] == "flux"
