"""The model registry: the models list, a request's ``model``, per-model defaults, limits and
family rules, and what a model's job stores and costs."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.checks import run_checks
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from jobs.models import GenerationJob

pytestmark = pytest.mark.django_db

BODY = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 4}


@pytest.fixture
def three_models(settings: Any) -> None:
    settings.GENERATOR_MODELS = {
        "tiny-sd": {"source": settings.GENERATOR_MODEL, "family": "sd15"},
        "turbo": {
            "source": "/models/sdxl-turbo",
            "family": "sdxl",
            "defaults": {"width": 512, "height": 512, "steps": 1, "guidance_scale": 0.0},
            "limits": {"max_size": 768, "max_steps": 8},
            "cost_weight": 3,
            "memory_gb": 9,
        },
        "flux": {
            "source": "/models/flux-schnell",
            "family": "flux",
            "defaults": {"steps": 4, "guidance_scale": 0.0, "scheduler": "flow_euler"},
        },
    }
    settings.GENERATOR_DEFAULT_MODEL = "tiny-sd"


def submit(api_client: APIClient, **overrides: Any) -> Any:
    return api_client.post("/api/v1/jobs", {**BODY, **overrides}, format="json")


def field_codes(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 400, response.content
    fields = response.json()["error"]["fields"]
    return {name: [error["code"] for error in errors] for name, errors in fields.items()}


@pytest.mark.usefixtures("three_models")
def test_the_models_list_shows_every_configured_model_with_its_defaults_and_limits(
    api_client: APIClient,
) -> None:
    listed = {model["name"]: model for model in api_client.get("/api/v1/models").json()}

    assert list(listed) == ["tiny-sd", "turbo", "flux"]
    assert [name for name, model in listed.items() if model["default"]] == ["tiny-sd"]
    turbo = listed["turbo"]
    assert turbo["family"] == "sdxl"
    assert turbo["defaults"] == {
        "width": 512,
        "height": 512,
        "steps": 1,
        "guidance_scale": 0.0,
        "scheduler": "default",
    }
    assert turbo["limits"]["width"] == [64, 768]
    assert turbo["limits"]["steps"] == [1, 8]
    assert turbo["cost_weight"] == 3.0
    assert listed["flux"]["negative_prompt"] is False
    assert listed["flux"]["schedulers"] == ["default", "flow_euler"]
    assert "source" not in turbo


@pytest.mark.usefixtures("three_models")
def test_a_job_without_a_model_runs_on_the_default_and_a_named_one_takes_its_defaults(
    api_client: APIClient,
) -> None:
    default = submit(api_client).json()
    turbo = api_client.post("/api/v1/jobs", {"prompt": "a fox", "model": "turbo"}, format="json").json()

    assert default["model"] == "tiny-sd"
    assert (turbo["model"], turbo["width"], turbo["steps"], turbo["guidance_scale"]) == ("turbo", 512, 1, 0.0)
    assert GenerationJob.objects.get(pk=turbo["id"]).model == "turbo"


@pytest.mark.usefixtures("three_models")
def test_the_cost_is_weighted_by_the_model(api_client: APIClient) -> None:
    reference = {"width": 512, "height": 512, "steps": 5, "guidance_scale": 1.0}
    tiny = submit(api_client, **reference).json()
    turbo = submit(api_client, **reference, model="turbo").json()

    assert (tiny["cost_units"], turbo["cost_units"]) == (0.2, 0.6)


@pytest.mark.usefixtures("three_models")
@pytest.mark.parametrize(
    ("overrides", "codes"),
    [
        ({"model": "sd-9"}, {"model": ["model_unknown"]}),
        (
            {"model": "flux", "negative_prompt": "blurry"},
            {"negative_prompt": ["negative_prompt_unsupported"]},
        ),
        ({"model": "flux", "scheduler": "euler_a"}, {"scheduler": ["scheduler_unsupported"]}),
        ({"model": "tiny-sd", "scheduler": "flow_euler"}, {"scheduler": ["scheduler_unsupported"]}),
        (
            {"model": "turbo", "width": 1024, "steps": 9},
            {"width": ["size_out_of_range"], "steps": ["steps_out_of_range"]},
        ),
    ],
)
def test_each_model_applies_its_own_limits_and_its_familys_rules(
    api_client: APIClient, overrides: dict[str, Any], codes: dict[str, list[str]]
) -> None:
    assert field_codes(submit(api_client, **overrides)) == codes


@pytest.mark.usefixtures("three_models")
def test_a_size_another_model_allows_is_accepted_for_that_model(api_client: APIClient) -> None:
    assert submit(api_client, model="tiny-sd", width=1024, height=1024).status_code == 202
    assert field_codes(submit(api_client, model="turbo", width=1024, height=1024)) == {
        "width": ["size_out_of_range"],
        "height": ["size_out_of_range"],
    }


@pytest.mark.usefixtures("three_models")
def test_the_schema_declares_model_as_the_enum_of_configured_names() -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)

    model = schema["components"]["schemas"]["JobSubmitInputRequest"]["properties"]["model"]
    enum_name = model["allOf"][0]["$ref"].rsplit("/", 1)[1]
    assert schema["components"]["schemas"][enum_name]["enum"] == ["tiny-sd", "turbo", "flux"]
    assert "/api/v1/models" in schema["paths"]


@pytest.mark.parametrize(
    ("models", "default", "problem"),
    [
        ({"x": {"source": "/m"}}, "x", "needs a source and a family"),
        ({"x": {"source": "/m", "family": "sd15", "limits": {"max_width": 9}}}, "x", "limits max_size"),
        ({"x": {"source": "/m", "family": "sd15", "defaults": {"steps": 500}}}, "x", "break its own rules"),
        (
            {"x": {"source": "/m", "family": "flux", "defaults": {"scheduler": "pndm"}}},
            "x",
            "break its own rules",
        ),
        ({"x": {"source": "/m", "family": "sd15"}}, "y", "GENERATOR_DEFAULT_MODEL"),
    ],
)
def test_a_broken_registry_is_a_settings_error(
    settings: Any, models: dict[str, Any], default: str, problem: str
) -> None:
    settings.GENERATOR_MODELS = models
    settings.GENERATOR_DEFAULT_MODEL = default

    errors = [message.msg for message in run_checks() if message.id == "jobs.E001"]

    assert len(errors) == 1 and problem in errors[0], errors
