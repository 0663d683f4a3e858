"""Helpers for abuse-control tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import connection
from django_ratelimit.core import _get_window
from rest_framework.test import APIClient

from core.errors import ApplicationError

VALID = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 4}


def fresh_window_client(template: str, *, period: int = 60, min_left: int = 40) -> str:
    """A client (``template`` with ``{}`` filled by 1..254) whose fixed django-ratelimit
    window has ``min_left`` seconds still to run, so that a test's burst of requests all
    lands in one window whatever the wall clock says."""
    for host in range(1, 255):
        candidate = template.format(host)
        if _get_window(candidate, period) - time.time() >= min_left:
            return candidate
    raise AssertionError("no client with a fresh window")


def submit(api_client: APIClient, *, ip: str, forwarded_for: str | None = None, **overrides: Any) -> Any:
    extra = {"REMOTE_ADDR": ip}
    if forwarded_for is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return api_client.post("/api/v1/jobs", {**VALID, **overrides}, format="json", **extra)


def submit_all_at_once(contenders: int, submit_one: Callable[[], object]) -> list[str]:
    """Runs ``submit_one`` in ``contenders`` threads released together; each outcome is
    "accepted" or the refusal's code."""
    barrier = threading.Barrier(contenders)
    outcomes: list[str] = []

    def contender() -> None:
        try:
            barrier.wait()
            submit_one()
            outcomes.append("accepted")
        except ApplicationError as error:
            outcomes.append(error.code)
        except Exception as error:  # shown in the test's assertion, instead of lost in a thread
            outcomes.append(repr(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=contender) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes
