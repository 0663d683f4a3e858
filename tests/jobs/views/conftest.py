"""Fixtures for the browser tests: the whole app on a live port, and Debian's headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.test.testcases import LiveServerThread

from tests.support.paths import ARTIFACTS

CHROMIUM = "/usr/bin/chromium"
# As root Chromium needs --no-sandbox; the rest keeps it from calling home (loopback only here).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = ARTIFACTS / "web"


def _whole_app(handler: WSGIHandler) -> WSGIHandler:
    """No test static handler: static files go through WhiteNoise, as in production."""
    return handler


@pytest.fixture
def site(transactional_db: None) -> Iterator[str]:
    """The project on 127.0.0.1 in a thread, sharing the test database with the worker.

    pytest-django's ``live_server`` serves static files with its own finder-based handler,
    which knows nothing of the hashed names that the manifest storage writes into the page.
    """
    thread = LiveServerThread("127.0.0.1", static_handler=_whole_app, port=0)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    try:
        yield f"http://127.0.0.1:{thread.port}"
    finally:
        thread.terminate()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    # A worker process imports torch and diffusers before its first job: slow on a busy machine.
    expect.set_options(timeout=60_000)

    # Playwright's sync API runs an event loop in this thread; Django's ORM refuses to run
    # beside one unless told that these tests use it from synchronous code only.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                yield chromium
            finally:
                chromium.close()


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
