"""GenerationParameters is the one declaration: the model, the API, its schema and the page follow it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from generator.parameters import PARAMETER_NAMES
from jobs.api.serializers import JobSerializer, JobSubmitInputSerializer
from jobs.forms import GenerateForm
from jobs.models import GenerationJob
from jobs.validation import job_limits
from tests.factories import EVERY_PARAMETER_SET, GenerationJobFactory
from tests.jobs.views.helpers import VALID_FORM, as_api_body, html

pytestmark = pytest.mark.django_db


def test_every_parameter_is_a_column_an_api_input_an_api_output_and_in_the_schema() -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]

    assert set(PARAMETER_NAMES) <= {field.name for field in GenerationJob._meta.get_fields()}
    assert list(JobSubmitInputSerializer().fields)[: len(PARAMETER_NAMES)] == list(PARAMETER_NAMES)
    assert set(PARAMETER_NAMES) <= set(JobSerializer().fields)
    assert list(schema["JobSubmitInputRequest"]["properties"])[: len(PARAMETER_NAMES)] == list(
        PARAMETER_NAMES
    )
    assert schema["JobSubmitInputRequest"]["required"] == ["prompt"]


def test_a_job_stores_and_gives_back_every_parameter() -> None:
    job = GenerationJobFactory(**GenerationJob.fields_from(EVERY_PARAMETER_SET))

    job.refresh_from_db()

    assert job.parameters == EVERY_PARAMETER_SET


def test_a_stored_job_runs_with_the_seed_of_each_of_its_images() -> None:
    assert list(EVERY_PARAMETER_SET.image_seeds()) == [987654, 987655]
    with pytest.raises(ValueError, match="random seed"):
        replace(EVERY_PARAMETER_SET, seed=None).image_seeds()


def test_the_page_hints_and_both_faces_enforce_the_configured_limits(
    client: Client, api_client: APIClient, settings: Any
) -> None:
    settings.JOB_LIMITS = {**settings.JOB_LIMITS, "max_size": 256, "max_steps": 10, "max_guidance": 12.0}
    ranges = job_limits().ranges()
    form = GenerateForm()
    api_body = as_api_body(VALID_FORM)

    hints = {
        name: (form.fields[name].widget.attrs["min"], form.fields[name].widget.attrs["max"])
        for name in ranges
        if name in form.fields
    }
    api = api_client.post(
        "/api/v1/jobs",
        {**api_body, "width": 264, "steps": 11, "guidance_scale": 12.5, "seed": None},
        format="json",
    ).json()["error"]["fields"]
    page = html(client.post("/", {**VALID_FORM, "width": "264", "steps": "11", "guidance_scale": "12.5"}))

    assert hints == {name: ranges[name] for name in ("width", "height", "steps", "guidance_scale", "seed")}
    assert hints["width"] == (64, 256)
    assert {name: [error["code"] for error in errors] for name, errors in api.items()} == {
        "width": ["size_out_of_range"],
        "steps": ["steps_out_of_range"],
        "guidance_scale": ["guidance_out_of_range"],
    }
    assert api["width"][0]["message"] == "Width must be between 64 and 256."
    for name, errors in api.items():
        widget = page.select_one(f"[name={name}]")
        assert page.select_one(f"#{widget['id']}_error").get_text(strip=True) == errors[0]["message"]
    assert not GenerationJob.objects.exists()
