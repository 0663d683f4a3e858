"""The page in a real browser (Debian's headless Chromium) against a live server, a real Celery
worker and the tiny model. Screenshots of each state go to test-artifacts/web/."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from PIL import Image
from playwright.sync_api import Page, Route, expect

from core.errors import ApplicationError
from jobs import services
from jobs.models import FailureCode, GenerationJob, JobStatus
from tests.factories import GenerationJobFactory
from tests.support.processes import WorkerProcess

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# Long enough for the worker to need a while: there is time to see it run, then cancel it.
# The largest job the limits allow: the tiny model runs smaller ones before the test can act.
SLOW = {"width": "1024", "height": "1024", "steps": "100"}


@pytest.fixture
def expected_console_errors() -> list[str]:
    """Patterns of console errors a test causes on purpose (Chromium logs every 4xx response)."""
    return []


@pytest.fixture
def page(browser: Any, expected_console_errors: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    problems: list[str] = []
    # A CSP violation, a script error or an htmx error shows up here.
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    yield page
    context.close()
    assert [p for p in problems if not any(re.search(e, p) for e in expected_console_errors)] == []


def fill_request(page: Page, *, prompt: str, width: str = "96", height: str = "64", steps: str = "4") -> None:
    page.get_by_label("Describe your image").fill(prompt)
    page.get_by_text("Advanced settings").click()
    page.get_by_label("Size").select_option("custom")
    page.get_by_label("Width").fill(width)
    page.get_by_label("Height").fill(height)
    page.get_by_label("Steps").fill(steps)


def pump_until(page: Page, condition: Callable[[], object]) -> None:
    """Lets Playwright deliver events (requests to route handlers) until ``condition`` holds."""
    for _ in range(600):
        if condition():
            return
        page.wait_for_timeout(100)
    pytest.fail("condition not met within 60 s")


def tab_to(page: Page, selector: str) -> None:
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("(selector) => document.activeElement.matches(selector)", selector):
            return
    pytest.fail(f"Tab never reached {selector}")


def box(page: Page, selector: str) -> dict[str, float]:
    found = page.locator(selector).bounding_box()
    assert found is not None, selector
    return found


def test_generating_an_image_from_prompt_to_download(
    site: str, gpu_worker: WorkerProcess, page: Page, screenshot_dir: Path, tmp_path: Path
) -> None:
    status_requests: list[str] = []
    page.on(
        "request", lambda request: status_requests.append(request.url) if "/status" in request.url else None
    )
    held: list[Route] = []
    page.goto(f"{site}/")
    page.evaluate("window.noReloadMarker = true")
    page.screenshot(path=screenshot_dir / "01-ready.png", full_page=True)
    fill_request(page, prompt="a red fox in the snow")
    # Hold the submit and the first poll, to look at the page before the server answers each.
    page.route(re.compile(r"/$|/status$"), lambda route: held.append(route))

    page.get_by_role("button", name="Generate").click()

    button = page.locator("#generate-button")
    expect(button).to_be_disabled()
    expect(button).to_have_text("Sending…")
    expect(page.get_by_label("Describe your image")).to_be_disabled()
    page.screenshot(path=screenshot_dir / "02-sending.png", full_page=True)
    pump_until(page, lambda: held)
    assert [route.request.method for route in held] == ["POST"]
    held.pop().continue_()

    skeleton = page.locator("#job .frame--queued .frame-sizer")
    expect(skeleton).to_be_visible()
    expect(button).to_be_disabled()
    expect(button).to_contain_text("Queued")
    skeleton_box = box(page, "#job .frame")
    assert skeleton_box["width"] / skeleton_box["height"] == pytest.approx(96 / 64, abs=0.02)
    page.screenshot(path=screenshot_dir / "03-queued-skeleton.png", full_page=True)
    for route in held:
        route.continue_()
    # Routes held after this point are released by unroute itself.
    page.unroute(re.compile(r"/$|/status$"))

    image = page.locator("#job .frame-image")
    expect(image).to_be_visible()
    expect(image).to_have_js_property("complete", True)
    expect(image).to_have_js_property("naturalWidth", 96)
    assert box(page, "#job .frame") == skeleton_box  # the image took the skeleton's place exactly
    expect(button).to_be_enabled()
    expect(button).to_have_text("Generate")
    job = GenerationJob.objects.get()
    assert job.status == JobStatus.COMPLETED
    expect(page.locator("#job .seed")).to_have_text(str(job.seed))
    expect(page.locator("#recent img")).to_have_count(1)
    assert page.url == f"{site}/jobs/{job.pk}"
    assert page.evaluate("window.noReloadMarker") is True
    page.screenshot(path=screenshot_dir / "04-completed.png", full_page=True)

    polls_at_completion = len(status_requests)
    page.wait_for_timeout(3500)  # more than three polling intervals
    assert len(status_requests) == polls_at_completion
    assert page.locator("#job[hx-trigger]").count() == 0

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download").click()
    download = download_info.value
    assert download.suggested_filename == f"a-red-fox-in-the-snow-{job.seed}.png"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    with Image.open(saved) as png:
        assert png.size == (96, 64)
        assert png.info["parameters"].startswith("a red fox in the snow")


def test_cancel_by_keyboard_while_polling_stops_a_running_job_and_frees_the_form(
    site: str, gpu_worker: WorkerProcess, page: Page, screenshot_dir: Path
) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{site}/")
    fill_request(page, prompt="a very slow lighthouse", **SLOW)
    page.get_by_role("button", name="Generate").click()

    expect(page.locator("#job progress[value]")).to_be_visible()
    expect(page.locator("#generate-button")).to_have_text(re.compile(r"^\s*Generating · step \d+ of \d+\s*$"))
    expect(page.locator("#job .frame--running")).to_be_visible()
    page.screenshot(path=screenshot_dir / "05-running.png", full_page=True)
    tab_to(page, "#job button.cancel")

    def polls() -> int:
        return sum(url.endswith("/status") for url in requested)

    polls_before = polls()
    pump_until(page, lambda: polls() >= polls_before + 2)
    # The panel was replaced by later polls, yet the keyboard is still on Cancel.
    expect(page.get_by_role("button", name="Cancel")).to_be_focused()
    # Cancel while a poll is in flight, whose late "running" answer must not undo the cancel.
    held: list[Route] = []
    page.route(re.compile(r"/status$"), lambda route: held.append(route))
    pump_until(page, lambda: held)
    page.keyboard.press("Enter")
    expect(page.locator("#job .job-state")).to_have_text("Cancelled")
    for route in held:
        route.continue_()
    page.unroute(re.compile(r"/status$"))
    polls_at_cancel = polls()
    page.wait_for_timeout(2500)

    assert polls() == polls_at_cancel
    expect(page.locator("#job .job-state")).to_have_text("Cancelled")
    expect(page.locator("#generate-button")).to_be_enabled()
    expect(page.get_by_role("button", name="Try again")).to_be_focused()
    assert GenerationJob.objects.get().status == JobStatus.CANCELLED
    page.screenshot(path=screenshot_dir / "06-cancelled.png", full_page=True)


def test_the_page_works_without_javascript(
    site: str, gpu_worker: WorkerProcess, browser: Any, screenshot_dir: Path
) -> None:
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{site}/")
    fill_request(page, prompt="a fox without scripts")

    page.get_by_role("button", name="Generate").click()

    job = GenerationJob.objects.get()
    page.wait_for_url(f"{site}/jobs/{job.pk}")
    # The page reloads itself (a <noscript> refresh) until the image is there.
    expect(page.locator("#job .frame-image")).to_be_visible()
    expect(page.locator("#generate-button")).to_be_enabled()
    page.screenshot(path=screenshot_dir / "07-no-javascript.png", full_page=True)
    context.close()


def test_the_page_can_be_used_with_the_keyboard_alone(
    site: str, gpu_worker: WorkerProcess, page: Page, screenshot_dir: Path
) -> None:
    page.goto(f"{site}/")

    tab_to(page, "#id_prompt")
    page.keyboard.type("a fox typed by keyboard")
    tab_to(page, ".advanced summary")
    page.keyboard.press("Enter")
    for selector, value in (("#id_width", "96"), ("#id_height", "64"), ("#id_steps", "4")):
        tab_to(page, selector)
        page.keyboard.press("ControlOrMeta+A")
        page.keyboard.type(value)
    tab_to(page, "#generate-button")
    page.screenshot(path=screenshot_dir / "08-keyboard-focus.png", full_page=True)
    page.keyboard.press("Enter")

    expect(page.locator("#job .frame-image")).to_be_visible()
    assert GenerationJob.objects.get().width == 96
    # Focus, lost when the button it was on got disabled, lands on the result's first action.
    expect(page.get_by_role("link", name="Download")).to_be_focused()


def test_a_rejected_prompt_is_explained_and_the_cursor_goes_back_to_it(
    site: str, page: Page, screenshot_dir: Path, expected_console_errors: list[str]
) -> None:
    expected_console_errors.append("status of 400")
    page.goto(f"{site}/")

    page.get_by_role("button", name="Generate").click()

    expect(page.locator("#id_prompt_error")).to_have_text("Describe the image you want.")
    expect(page.locator("#id_prompt")).to_be_focused()
    expect(page.locator("#generate-button")).to_be_enabled()
    page.screenshot(path=screenshot_dir / "09-invalid-prompt.png", full_page=True)
    assert not GenerationJob.objects.exists()


def test_a_rate_limited_submit_counts_down_before_the_button_works_again(
    site: str,
    page: Page,
    screenshot_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    expected_console_errors: list[str],
) -> None:
    expected_console_errors.append("status of 429")

    def rate_limited(**kwargs: Any) -> GenerationJob:
        raise ApplicationError(code="rate_limited", message="Slow down.", retry_after=3)

    # The live server runs in this process, so this is what its submit path raises.
    monkeypatch.setattr(services, "job_submit", rate_limited)
    page.goto(f"{site}/")
    page.get_by_label("Describe your image").fill("a fox in a hurry")

    page.get_by_role("button", name="Generate").click()

    countdown = page.locator("#composer-problem .countdown")
    expect(countdown).to_have_text("3 s")
    expect(page.locator("#generate-button")).to_be_disabled()
    page.screenshot(path=screenshot_dir / "10-rate-limited.png", full_page=True)
    expect(countdown).to_have_text("2 s")
    expect(page.locator("#generate-button")).to_be_enabled(timeout=10_000)
    expect(page.get_by_label("Describe your image")).to_have_value("a fox in a hurry")


def test_a_failed_job_on_a_phone_in_dark_mode(site: str, browser: Any, screenshot_dir: Path) -> None:
    job = GenerationJobFactory(
        status=JobStatus.FAILED,
        failure_code=FailureCode.OUT_OF_MEMORY,
        failure_message="CUDA out of memory.",
        width=512,
        height=768,
        steps=30,
        finished_at=timezone.now(),
    )
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    page = context.new_page()

    page.goto(f"{site}/jobs/{job.pk}")

    expect(page.locator("#job .job-state")).to_have_text("The GPU ran out of memory for this image")
    expect(page.get_by_role("button", name="Try smaller")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    frame = box(page, "#job .frame")
    assert frame["width"] / frame["height"] == pytest.approx(512 / 768, abs=0.02)
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert sum(int(channel) for channel in re.findall(r"\d+", background)[:3]) < 3 * 64
    page.screenshot(path=screenshot_dir / "11-phone-dark-out-of-memory.png", full_page=True)
    context.close()
