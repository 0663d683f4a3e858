"""POST /v1/images/generations driven by the official ``openai`` package against a real web
process and a real GPU worker, as any OpenAI client or tool would use it."""

from __future__ import annotations

import base64
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from django.test import Client

from jobs.models import GenerationJob, JobStatus
from ratelimit.services import api_key_create
from tests.support.processes import WebProcess, WorkerProcess

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def web(django_db_setup: None) -> Iterator[WebProcess]:
    web = WebProcess(extra_env={"SUBMIT_RATE": "1000/m", "SUBMIT_MAX_ACTIVE_JOBS": "100"})
    try:
        web.wait_ready()
        yield web
    finally:
        web.stop()


def openai_client(web: WebProcess, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{web.url}/v1", api_key=api_key, max_retries=0, timeout=120)


# The SDK's own way to send no Authorization header: the anonymous caller.
ANONYMOUS: dict[str, Any] = {"extra_headers": {"Authorization": openai.omit}}


def test_url_format_answers_every_image_as_a_url_for_the_callers_api_key(
    web: WebProcess, gpu_worker: WorkerProcess
) -> None:
    api_key, plain = api_key_create(name="openai-client")

    result = openai_client(web, plain).images.generate(
        prompt="a paper boat", n=2, size="64x64", model="default"
    )

    job = GenerationJob.objects.get(prompt="a paper boat")
    assert (job.status, job.api_key_id, job.num_images, job.width, job.height) == (
        JobStatus.COMPLETED,
        api_key.pk,
        2,
        64,
        64,
    )
    assert result.created == int(job.created_at.timestamp())
    assert result.data is not None and len(result.data) == 2
    for image in result.data:
        assert image.url is not None
        with urllib.request.urlopen(image.url, timeout=10) as response:
            assert response.read().startswith(PNG_SIGNATURE)


def test_b64_json_format_answers_the_stored_png_to_an_anonymous_caller(
    web: WebProcess, gpu_worker: WorkerProcess
) -> None:
    result = openai_client(web).images.generate(
        prompt="a red kite", size="64x64", response_format="b64_json", **ANONYMOUS
    )

    job = GenerationJob.objects.get(prompt="a red kite")
    assert (job.api_key_id, job.client_network) == (None, "127.0.0.1")
    assert result.data is not None and result.data[0].b64_json is not None
    png = base64.b64decode(result.data[0].b64_json)
    assert png.startswith(PNG_SIGNATURE)
    with job.images.get().file.open("rb") as stored:
        assert png == stored.read()


def test_a_size_over_the_limits_is_a_400_in_openais_shape_and_queues_nothing(web: WebProcess) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client(web).images.generate(prompt="a huge mural", size="4096x4096", **ANONYMOUS)

    assert (raised.value.status_code, raised.value.type, raised.value.param, raised.value.code) == (
        400,
        "invalid_request_error",
        "size",
        "size_out_of_range",
    )
    assert not GenerationJob.objects.filter(prompt="a huge mural").exists()


def test_an_unknown_model_is_a_400_model_not_found(web: WebProcess) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client(web).images.generate(prompt="a tin robot", model="dall-e-3", size="64x64", **ANONYMOUS)

    assert (raised.value.param, raised.value.code) == ("model", "model_not_found")


def test_a_key_that_names_no_live_key_is_a_401_never_anonymous(web: WebProcess) -> None:
    with pytest.raises(openai.AuthenticationError) as raised:
        openai_client(web, "ig_00000000_" + "x" * 43).images.generate(prompt="a lost key", size="64x64")

    assert (raised.value.status_code, raised.value.code) == (401, "invalid_api_key")
    assert not GenerationJob.objects.filter(prompt="a lost key").exists()


def test_a_job_not_done_in_time_answers_how_to_poll_it_and_goes_on(client: Client, settings: Any) -> None:
    # No wait at all: the job cannot have ended when the answer goes out.
    settings.OPENAI_IMAGES_WAIT_SECONDS = 0

    response = client.post(
        "/v1/images/generations", {"prompt": "a slow snail", "size": "64x64"}, content_type="application/json"
    )

    error = response.json()["error"]
    assert (response.status_code, error["code"], error["type"]) == (504, "job_not_finished", "server_error")
    assert response["x-should-retry"] == "false"
    assert response["Location"] in error["message"]
    job = GenerationJob.objects.get(prompt="a slow snail")
    assert client.get(response["Location"]).json()["id"] == str(job.id)
