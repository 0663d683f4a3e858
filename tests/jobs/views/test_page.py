"""The page itself: the form, submitting with and without htmx, validation, errors, CSRF, assets."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from core.errors import ApplicationError
from jobs import services
from jobs.models import GenerationJob, JobStatus
from tests.jobs.views.helpers import HTMX, VALID_FORM, as_api_body, html

pytestmark = pytest.mark.django_db


def submit(client: Client, *, htmx: bool = False, **overrides: str) -> Any:
    return client.post("/", {**VALID_FORM, **overrides}, headers=HTMX if htmx else {})


def test_home_shows_a_labelled_prompt_box_advanced_settings_and_a_generate_button(client: Client) -> None:
    page = html(client.get("/"))

    form = page.select_one("form#composer")
    assert (form["method"], form["action"], form["hx-post"]) == ("post", "/", "/")
    assert form.select_one("input[name=csrfmiddlewaretoken]")
    prompt = form.select_one("textarea#id_prompt[name=prompt]")
    assert form.select_one("label[for=id_prompt]").get_text(strip=True) == "Describe your image"
    assert prompt is not None
    advanced = form.select_one("details.advanced")
    assert advanced.select_one("summary").get_text(strip=True) == "Advanced settings"
    for name in ("negative_prompt", "size", "width", "height", "steps", "guidance_scale", "seed"):
        field = advanced.select_one(f"[name={name}]")
        assert advanced.select_one(f"label[for={field['id']}]"), name
    presets = [option["value"] for option in advanced.select("select[name=size] option")]
    assert presets[0] == "512x512" and presets[-1] == "custom"
    assert form.select_one("button[type=submit]").get_text(strip=True) == "Generate"
    assert page.select_one("#job").get_text(strip=True) == "Your image will appear here."


def test_page_has_a_polite_live_region_for_job_status(client: Client) -> None:
    announcer = html(client.get("/")).select_one("#announcer")

    assert (announcer["role"], announcer["aria-live"]) == ("status", "polite")


def test_page_loads_htmx_and_styles_from_its_own_static_files_without_inline_code(client: Client) -> None:
    response = client.get("/")
    page = html(response)

    scripts = [script.get("src") for script in page.select("script")]
    stylesheets = [link["href"] for link in page.select("link[rel=stylesheet]")]
    assert all(src and src.startswith("/static/") for src in scripts + stylesheets)
    assert any(re.search(r"/static/django_htmx/htmx-2\.min\.[0-9a-f]+\.js$", src) for src in scripts)
    assert not page.select("style") and not page.select("[style]")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    for src in scripts + stylesheets:
        served = client.get(src)
        assert served.status_code == 200, src
        assert served["Content-Type"].startswith(("text/javascript", "application/javascript", "text/css"))


def test_htmx_is_configured_without_inline_styles_or_eval(client: Client) -> None:
    config = json.loads(html(client.get("/")).select_one("meta[name=htmx-config]")["content"])

    assert config["includeIndicatorStyles"] is False
    assert config["allowEval"] is False


def test_submit_without_javascript_queues_the_job_and_redirects_to_its_page(client: Client) -> None:
    response = submit(client, prompt="  a   red fox ", seed="77")

    job = GenerationJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/jobs/{job.pk}"
    assert (job.prompt, job.width, job.height, job.steps, job.seed) == ("a red fox", 96, 64, 4, 77)
    assert (job.status, job.client_ip) == (JobStatus.QUEUED, "127.0.0.1")


def test_submit_with_a_size_preset_uses_the_presets_width_and_height(client: Client) -> None:
    submit(client, size="768x512", width="96", height="64")

    assert (GenerationJob.objects.get().width, GenerationJob.objects.get().height) == (768, 512)


def test_submit_with_htmx_answers_the_polling_job_panel_and_pushes_the_job_url(client: Client) -> None:
    response = submit(client, htmx=True)

    job = GenerationJob.objects.get()
    assert response.status_code == 200
    assert response["HX-Push-Url"] == f"/jobs/{job.pk}"
    panel = html(response).select_one("#job")
    assert panel["data-active"] == "true"
    assert (panel["hx-get"], panel["hx-trigger"]) == (f"/jobs/{job.pk}/status", "every 1s")
    assert "recent-changed" in json.loads(response["HX-Trigger"])
    recent = html(client.get("/recent", headers=HTMX)).select_one("#recent")
    assert [a["href"] for a in recent.select("a.recent-item")] == [f"/jobs/{job.pk}"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", ""),
        ("prompt", "   "),
        ("prompt", "x" * 1001),
        ("width", "100"),
        ("height", "2048"),
        ("steps", "0"),
        ("guidance_scale", "31"),
        ("seed", "-1"),
    ],
)
def test_submit_rejects_what_the_api_rejects_with_the_same_message_beside_the_field(
    client: Client, api_client: APIClient, field: str, value: str
) -> None:
    api_error = api_client.post(
        "/api/v1/jobs", as_api_body({**VALID_FORM, field: value}), format="json"
    ).json()["error"]

    response = submit(client, **{field: value})

    assert response.status_code == 400
    widget = html(response).select_one(f"[name={field}]")
    assert widget["aria-invalid"] == "true"
    errors = html(response).select_one(f"#{widget['id']}_error")
    assert errors.get_text(strip=True) == api_error["fields"][field][0]["message"]
    assert not GenerationJob.objects.exists()


def test_a_field_that_is_not_a_number_is_an_error_beside_the_field_not_a_server_error(client: Client) -> None:
    response = submit(client, steps="lots")

    assert response.status_code == 400
    assert html(response).select_one("#id_steps_error").get_text(strip=True) == "Enter a whole number."
    assert html(response).select_one("details.advanced").has_attr("open")
    assert not GenerationJob.objects.exists()


def test_an_htmx_submit_with_errors_replaces_the_form_and_focuses_the_field_to_fix(client: Client) -> None:
    response = submit(client, htmx=True, prompt="")

    assert response.status_code == 400
    assert (response["HX-Retarget"], response["HX-Reswap"]) == ("#composer", "outerHTML")
    form = html(response).select_one("form#composer")
    assert form.select_one("[data-problem]")["data-problem"] == "validation_error"
    assert form.select_one("#id_prompt").has_attr("autofocus")
    assert form.select_one("#id_prompt_error").get_text(strip=True) == "Describe the image you want."


@pytest.mark.parametrize("htmx", [False, True])
def test_a_rate_limited_submit_says_how_long_to_wait_with_a_countdown(
    client: Client, monkeypatch: pytest.MonkeyPatch, htmx: bool
) -> None:
    def rate_limited(**kwargs: Any) -> GenerationJob:
        raise ApplicationError(code="rate_limited", message="Too many requests.", retry_after=75)

    monkeypatch.setattr(services, "job_submit", rate_limited)

    response = submit(client, htmx=htmx)

    assert (response.status_code, response["Retry-After"]) == (429, "75")
    problem = html(response).select_one("#composer-problem")
    assert problem["data-problem"] == "rate_limited"
    assert "You're generating faster than allowed." in problem.get_text()
    countdown = problem.select_one(".countdown")
    assert (countdown["data-countdown"], countdown.get_text()) == ("75", "1 min 15 s")
    assert html(response).select_one("#id_prompt").get_text().strip() == VALID_FORM["prompt"]


@pytest.mark.parametrize(
    ("code", "status", "title"),
    [
        ("too_many_active_jobs", 429, "You already have images in progress."),
        ("daily_quota_exceeded", 429, "You've reached today's limit."),
        ("blocked", 403, "Generating isn't available from your network."),
        ("queue_full", 503, "The queue is full right now."),
        ("something_new", 400, "Something went wrong."),
    ],
)
def test_each_submit_error_code_gets_its_own_human_message(
    client: Client, monkeypatch: pytest.MonkeyPatch, code: str, status: int, title: str
) -> None:
    def refuse(**kwargs: Any) -> GenerationJob:
        raise ApplicationError(code=code, message="Server says no.")

    monkeypatch.setattr(services, "job_submit", refuse)

    response = submit(client, htmx=True)

    assert response.status_code == status
    problem = html(response).select_one("#composer-problem")
    assert problem.select_one(".alert-title").get_text(strip=True) == title
    # Only a code the page does not know shows the server's own words.
    assert ("Server says no." in problem.get_text()) == (code == "something_new")


def test_a_second_job_while_one_is_active_is_refused_with_a_countdown(client: Client, settings: Any) -> None:
    settings.SUBMIT_MAX_ACTIVE_JOBS = 1
    submit(client, htmx=True)

    response = submit(client, htmx=True)

    assert response.status_code == 429
    problem = html(response).select_one("#composer-problem")
    assert problem["data-problem"] == "too_many_active_jobs"
    assert problem.select_one(".alert-title").get_text(strip=True) == "You already have images in progress."
    assert int(problem.select_one(".countdown")["data-countdown"]) > 0
    assert GenerationJob.objects.count() == 1


def test_an_htmx_post_without_the_csrf_token_is_refused() -> None:
    client = Client(enforce_csrf_checks=True)
    token = html(client.get("/")).select_one("input[name=csrfmiddlewaretoken]")["value"]

    refused = client.post("/", VALID_FORM, headers=HTMX)
    accepted = client.post("/", {**VALID_FORM, "csrfmiddlewaretoken": token}, headers=HTMX)

    assert refused.status_code == 403
    assert html(refused).select_one("[data-problem]")["data-problem"] == "csrf_failed"
    assert accepted.status_code == 200
    assert GenerationJob.objects.count() == 1


def test_a_form_posted_without_the_csrf_token_explains_that_the_page_expired() -> None:
    response = Client(enforce_csrf_checks=True).post("/", VALID_FORM)

    assert response.status_code == 403
    assert "Your page has expired." in html(response).select_one("#composer-problem").get_text()
    assert not GenerationJob.objects.exists()


def test_recent_images_are_the_ones_made_in_this_browser_newest_first(client: Client) -> None:
    other_browser = Client()
    submit(client, prompt="first")
    submit(other_browser, prompt="someone else's")
    submit(client, prompt="second")

    items = html(client.get("/")).select("#recent .recent-item")

    assert [item.select_one(".recent-prompt").get_text(strip=True) for item in items] == ["second", "first"]
