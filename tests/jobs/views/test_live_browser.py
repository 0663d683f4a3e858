"""The page over the real ASGI server (gunicorn + uvicorn's worker, as production serves it) in
headless Chromium: the job's event stream fills the pending frame with previews that change as
the image forms, then the result takes the same box. Screenshots go to test-artifacts/web/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.jobs.views.test_browser import box, fill_request
from tests.support.processes import WebProcess, WorkerProcess

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def asgi_site(transactional_db: None) -> Iterator[str]:
    web = WebProcess(extra_env={"SUBMIT_MAX_ACTIVE_JOBS": "1000", "SUBMIT_RATE": "1000/m"})
    try:
        web.wait_ready()
        yield web.url
    finally:
        web.stop()


def test_the_page_shows_previews_changing_in_the_frame_while_the_job_runs(
    asgi_site: str, gpu_worker: WorkerProcess, browser: Any, screenshot_dir: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    status_requests: list[str] = []
    page.on(
        "request", lambda request: status_requests.append(request.url) if "/status" in request.url else None
    )
    page.goto(f"{asgi_site}/")
    # Many steps, so previews (every 5 steps) keep coming for a while on the tiny model.
    fill_request(page, prompt="a harbour at night", width="192", height="128", steps="50")
    page.get_by_role("button", name="Generate").click()

    preview = page.locator("#job .frame-preview")
    expect(preview).to_be_visible()
    expect(preview).to_have_js_property("complete", True)
    first_source = preview.get_attribute("src")
    frame_box = box(page, "#job .frame")
    assert frame_box["width"] / frame_box["height"] == pytest.approx(192 / 128, abs=0.02)
    assert box(page, "#job .frame-preview") == frame_box  # the preview fills the skeleton's box
    page.screenshot(path=screenshot_dir / "live-01-first-preview.png", full_page=True)
    polls_while_streaming = len(status_requests)
    # The first preview comes at step 5 of 51: the job is still running, the stream open.
    expect(page.locator("#job .job-state")).to_contain_text("Generating · step")
    expect(page.locator("#generate-button")).to_contain_text("Generating · step")
    assert page.evaluate("document.getElementById('job').dataset.streaming") == "true"

    expect(preview).not_to_have_attribute("src", first_source or "")
    page.screenshot(path=screenshot_dir / "live-02-later-preview.png", full_page=True)

    image = page.locator("#job .frame-image")
    # Generous: the tiny model's 50 steps are slow when the machine is loaded.
    expect(image).to_be_visible(timeout=240_000)
    assert box(page, "#job .frame") == frame_box
    # The stream said it all: no poll went out while it was open, only the one fetch at its end.
    assert len(status_requests) - polls_while_streaming == 1
    page.screenshot(path=screenshot_dir / "live-03-completed.png", full_page=True)
    context.close()
    assert problems == []
