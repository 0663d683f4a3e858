"""Compute cost: the formula, the value stored and shown, and work that overflows it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from core.errors import ApplicationError
from jobs.cost import job_cost_units
from jobs.models import GenerationJob
from ratelimit.models import ClientUsage

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("width", "height", "steps", "num_images", "guidance_scale", "units"),
    [
        (512, 512, 25, 1, 1.0, "1"),  # the reference
        (512, 512, 25, 1, 7.5, "2"),  # classifier-free guidance doubles the UNet batch
        (1024, 1024, 100, 4, 7.5, "128"),
        (64, 64, 4, 1, 7.5, "0.005"),
        (512, 512, 25, 1, 0.0, "1"),
        (64, 64, 1, 1, 1.0, "0.001"),  # rounded up: no job is free
    ],
)
def test_cost_is_pixels_times_steps_times_images_times_guidance_relative_to_512_25_1(
    width: int, height: int, steps: int, num_images: int, guidance_scale: float, units: str
) -> None:
    cost = job_cost_units(
        width=width,
        height=height,
        steps=steps,
        num_images=num_images,
        guidance_scale=guidance_scale,
        cost_weight=1.0,
    )

    assert cost == Decimal(units)


def test_a_cost_beyond_what_can_be_stored_is_a_validation_error() -> None:
    with pytest.raises(ApplicationError) as raised:
        job_cost_units(
            width=10**9, height=10**9, steps=10**9, num_images=10**9, guidance_scale=7.5, cost_weight=1.0
        )

    assert raised.value.code == "validation_error"
    assert raised.value.fields["cost"][0].code == "cost_out_of_range"


def test_the_cost_is_stored_on_the_job_shown_in_its_status_and_counted_in_usage(
    api_client: APIClient,
) -> None:
    body = {"prompt": "a lighthouse", "width": 128, "height": 64, "steps": 5, "guidance_scale": 1.0}

    submitted = api_client.post("/api/v1/jobs", body, format="json", REMOTE_ADDR="198.51.100.80")
    status = api_client.get(submitted["Location"])

    # 1/32 of the pixels x 1/5 of the steps = 0.00625, rounded up to whole thousandths.
    assert GenerationJob.objects.get().cost_units == Decimal("0.007")
    assert status.json()["cost_units"] == 0.007
    assert ClientUsage.objects.get(network="198.51.100.80").cost_milliunits == 7


@pytest.mark.parametrize(
    "overflow",
    [
        {"width": 10**30},
        {"steps": 10**30, "num_images": 10**30},
        {"height": -(10**30)},
        {"guidance_scale": 1e308},
    ],
)
def test_huge_numbers_are_a_400_that_changes_nothing(api_client: APIClient, overflow: dict[str, int]) -> None:
    body = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 4, **overflow}

    response = api_client.post("/api/v1/jobs", body, format="json", REMOTE_ADDR="198.51.100.81")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert not GenerationJob.objects.exists()
    assert not ClientUsage.objects.exists()
