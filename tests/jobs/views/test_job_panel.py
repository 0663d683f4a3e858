"""The job panel htmx polls and the job's own page: each state, each failure, cancel, download."""

from __future__ import annotations

import json
import urllib.parse
import uuid
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from jobs.models import FailureCode, GenerationJob, JobStatus
from jobs.problems import problem_for
from tests.factories import GenerationJobFactory, JobImageFactory
from tests.jobs.views.helpers import HTMX, html

pytestmark = pytest.mark.django_db


def status_of(client: Client, job: GenerationJob) -> Any:
    return client.get(f"/jobs/{job.pk}/status", headers=HTMX)


def finished(**fields: Any) -> GenerationJob:
    return GenerationJobFactory(finished_at=timezone.now(), **fields)


def test_a_queued_job_shows_its_place_in_line_and_keeps_polling(client: Client) -> None:
    GenerationJobFactory()
    job = GenerationJobFactory()

    response = status_of(client, job)

    assert response.status_code == 200
    panel = html(response).select_one("#job")
    assert panel.select_one(".queue-position").get_text() == "#2"
    assert panel["data-busy-label"] == "Queued · #2 in line"
    assert (panel["hx-get"], panel["hx-trigger"], panel["hx-swap"]) == (
        f"/jobs/{job.pk}/status",
        "every 1s",
        "outerHTML",
    )
    assert panel.select_one("form button.cancel").get_text(strip=True) == "Cancel"


def test_the_skeleton_has_the_exact_size_of_the_requested_image(client: Client) -> None:
    job = GenerationJobFactory(width=96, height=64)

    sizer = html(status_of(client, job)).select_one("#job .frame--queued img.frame-sizer")

    assert (sizer["width"], sizer["height"], sizer["alt"]) == ("96", "64", "")
    svg = urllib.parse.unquote(sizer["src"].removeprefix("data:image/svg+xml,"))
    assert "width='96' height='64'" in svg


def test_polls_over_the_status_limit_are_refused_without_replacing_the_panel(
    client: Client, settings: Any
) -> None:
    settings.STATUS_POLL_RATE = "2/m"
    job = GenerationJobFactory()

    answers = [status_of(client, job) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert answers[2]["HX-Reswap"] == "none"
    assert int(answers[2]["Retry-After"]) > 0


def test_a_running_job_shows_a_progress_bar_with_step_and_total(client: Client) -> None:
    job = GenerationJobFactory(
        status=JobStatus.RUNNING, started_at=timezone.now(), progress_step=3, progress_total=5
    )

    panel = html(status_of(client, job)).select_one("#job")

    progress = panel.select_one("progress")
    assert (progress["value"], progress["max"]) == ("3", "5")
    assert panel.select_one(".job-state").get_text(" ", strip=True) == "Generating · step 3 of 5"
    assert panel["data-busy-label"] == "Generating · step 3 of 5"
    assert panel.select_one(".frame--running img.frame-sizer")
    assert panel.has_attr("hx-trigger")


def test_a_completed_job_answers_286_and_its_panel_no_longer_polls(client: Client) -> None:
    image = JobImageFactory(job__width=96, job__height=64, job__seed=4242)

    response = status_of(client, image.job)

    assert response.status_code == 286
    assert "recent-changed" in json.loads(response["HX-Trigger"])  # the thumbnails reload
    panel = html(response).select_one("#job")
    assert not panel.has_attr("hx-trigger") and not panel.has_attr("hx-get")
    assert panel["data-active"] == "false"
    shown = panel.select_one(".frame--ready img.frame-image")
    assert (shown["src"], shown["width"], shown["height"]) == (image.file.url, "96", "64")
    assert panel.select_one(".frame--ready img.frame-sizer")["width"] == "96"
    assert panel.select_one(".seed").get_text() == "4242"
    assert panel.select_one("a.download")["href"] == f"/jobs/{image.job.pk}/images/0/download"


def test_a_completed_job_offers_generate_again_with_its_seed_and_new_seed_without(client: Client) -> None:
    job = JobImageFactory(job__seed=4242, job__width=96, job__height=64).job

    forms = {
        form.select_one("button").get_text(strip=True): {
            field["name"]: field["value"] for field in form.select("input[type=hidden]")
        }
        for form in html(status_of(client, job)).select(".job-result form")
    }

    assert forms["Generate again"]["seed"] == "4242"
    assert forms["New seed"]["seed"] == ""
    for fields in forms.values():
        assert (fields["prompt"], fields["size"], fields["width"], fields["height"]) == (
            job.prompt,
            "custom",
            "96",
            "64",
        )


def test_generate_again_submits_the_same_request_as_a_new_job(client: Client) -> None:
    job = JobImageFactory(job__seed=4242, job__width=96, job__height=64, job__steps=4).job
    again = html(status_of(client, job)).select(".job-result form")[0]
    fields = {field["name"]: field["value"] for field in again.select("input[type=hidden]")}

    client.post("/", fields, headers=HTMX)

    copy = GenerationJob.objects.exclude(pk=job.pk).get()
    assert (copy.prompt, copy.width, copy.height, copy.steps, copy.seed, copy.guidance_scale) == (
        job.prompt,
        96,
        64,
        4,
        4242,
        job.guidance_scale,
    )


@pytest.mark.parametrize(
    ("code", "action", "button"),
    [
        (
            FailureCode.INVALID_PROMPT,
            "Change the text of your prompt, then generate again.",
            "Edit the prompt",
        ),
        (FailureCode.TIMEOUT, "Try a smaller size or fewer steps.", "Try smaller"),
        (FailureCode.OUT_OF_MEMORY, "Try a smaller size or fewer steps.", "Try smaller"),
        (FailureCode.INFERENCE_ERROR, "This is usually temporary: try again.", "Try again"),
        (FailureCode.WORKER_LOST, "Nothing is wrong with your request: try again.", "Try again"),
    ],
)
def test_each_failure_code_has_its_own_message_and_suggested_action(
    client: Client, code: str, action: str, button: str
) -> None:
    job = finished(status=JobStatus.FAILED, failure_code=code, width=512, height=512, steps=20)

    response = status_of(client, job)

    assert response.status_code == 286
    panel = html(response).select_one("#job")
    assert not panel.has_attr("hx-trigger")
    assert panel.select_one(".job-state").get_text(strip=True) == problem_for(code).title
    assert problem_for(code).known
    assert panel.select_one(".job-problem-action").get_text(strip=True) == action
    assert button in [b.get_text(strip=True) for b in panel.select(".job-problem .button")]


def test_try_smaller_after_running_out_of_memory_halves_the_size_and_the_steps(client: Client) -> None:
    job = finished(
        status=JobStatus.FAILED, failure_code=FailureCode.OUT_OF_MEMORY, width=768, height=512, steps=30
    )

    form = html(status_of(client, job)).select_one(".job-problem form")
    fields = {field["name"]: field["value"] for field in form.select("input[type=hidden]")}

    assert form.select_one("button")["title"] == "384\N{MULTIPLICATION SIGN}256, 15 steps"
    assert (fields["width"], fields["height"], fields["steps"]) == ("384", "256", "15")


def test_a_cancelled_job_says_so_and_stops_polling(client: Client) -> None:
    job = finished(status=JobStatus.CANCELLED, failure_code=FailureCode.CANCELLED)

    response = status_of(client, job)

    assert response.status_code == 286
    assert html(response).select_one(".job-state").get_text(strip=True) == "Cancelled"


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING])
def test_cancel_with_htmx_stops_an_active_job_and_answers_its_final_panel(
    client: Client, status: str
) -> None:
    job = GenerationJobFactory(status=status)

    response = client.post(f"/jobs/{job.pk}/cancel", headers=HTMX)

    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    panel = html(response).select_one("#job")
    assert panel["data-status"] == "cancelled" and not panel.has_attr("hx-trigger")


def test_cancel_without_javascript_returns_to_the_job_page(client: Client) -> None:
    job = GenerationJobFactory()

    response = client.post(f"/jobs/{job.pk}/cancel")

    assert (response.status_code, response["Location"]) == (302, f"/jobs/{job.pk}")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED


def test_cancel_of_a_job_that_already_finished_shows_it_finished(client: Client) -> None:
    job = JobImageFactory().job

    response = client.post(f"/jobs/{job.pk}/cancel", headers=HTMX)

    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    assert html(response).select_one("#job")["data-status"] == "completed"


def test_download_is_an_attachment_named_after_the_prompt_and_seed(client: Client) -> None:
    image = JobImageFactory(job__prompt="A red fox, at dawn!", job__seed=1234, seed=1234)

    response = client.get(f"/jobs/{image.job.pk}/images/0/download")

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="a-red-fox-at-dawn-1234.png"'
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content) == b"\x89PNG\r\n\x1a\n"


def test_downloading_an_image_that_does_not_exist_is_a_404(client: Client) -> None:
    job = JobImageFactory().job

    assert client.get(f"/jobs/{job.pk}/images/1/download").status_code == 404
    assert client.get(f"/jobs/{uuid.uuid4()}/images/0/download").status_code == 404


def test_without_javascript_the_job_page_refreshes_itself_only_while_the_job_is_active(
    client: Client,
) -> None:
    active = GenerationJobFactory(status=JobStatus.RUNNING, progress_step=1, progress_total=4)
    done = JobImageFactory().job

    active_page = html(client.get(f"/jobs/{active.pk}"))
    done_page = html(client.get(f"/jobs/{done.pk}"))

    assert active_page.select_one("noscript meta[http-equiv=refresh]")["content"] == "2"
    assert done_page.select_one("noscript meta[http-equiv=refresh]") is None


def test_the_form_is_disabled_and_says_why_while_the_pages_job_is_active(client: Client) -> None:
    active = GenerationJobFactory(status=JobStatus.RUNNING, progress_step=1, progress_total=4)
    done = JobImageFactory().job

    active_page = html(client.get(f"/jobs/{active.pk}"))
    done_page = html(client.get(f"/jobs/{done.pk}"))

    assert active_page.select_one("#composer-fields").has_attr("disabled")
    assert active_page.select_one("#generate-button").get_text(strip=True) == "Generating · step 1 of 4"
    assert not done_page.select_one("#composer-fields").has_attr("disabled")
    assert done_page.select_one("#generate-button").get_text(strip=True) == "Generate"


def test_the_job_page_fills_the_form_with_the_jobs_settings_but_not_its_seed(client: Client) -> None:
    job = JobImageFactory(job__prompt="a red fox", job__width=768, job__height=512, job__seed=99).job

    form = html(client.get(f"/jobs/{job.pk}")).select_one("#composer")

    assert form.select_one("#id_prompt").get_text().strip() == "a red fox"
    assert form.select_one("#id_size option[selected]")["value"] == "768x512"
    assert not form.select_one("#id_seed").get("value")


def test_an_unknown_job_is_a_friendly_404_page(client: Client) -> None:
    response = client.get(f"/jobs/{uuid.uuid4()}")

    assert response.status_code == 404
    assert html(response).select_one("h1").get_text(strip=True) == "There is nothing here"
    assert client.get("/jobs/not-a-uuid").status_code == 404
    assert client.get(f"/jobs/{uuid.uuid4()}/status", headers=HTMX).status_code == 404
