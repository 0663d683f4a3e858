"""Shared fixtures: the tiny model, an API client, and a real Celery worker process.

The harness behind them (processes, waits, ports, Redis state) is ``tests/support/``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests.support.processes import WorkerProcess
from tests.support.redis_state import clear_abuse_state, redis_client


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from generator.tiny_model import build_tiny_model, is_current_tiny_model

    path = Path(settings.GENERATOR_MODEL)
    if not is_current_tiny_model(path):
        build_tiny_model(path)
    return path


@pytest.fixture(scope="session")
def tiny_family_dirs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model of every family, by family: the default SD 1.5 one, and SDXL, SD 3.5 and
    FLUX.1 built for this session (about a second each)."""
    from generator.tiny_model import FAMILIES, build_tiny_model

    folder = tmp_path_factory.mktemp("tiny-families")
    built = {
        family: build_tiny_model(folder / family, family=family) for family in FAMILIES if family != "sd15"
    }
    return {"sd15": tiny_model_dir, **built}


@pytest.fixture(scope="session")
def engine(tiny_model_dir: Path) -> Any:
    from generator.engine import Engine

    return Engine.load(str(tiny_model_dir))


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture(scope="session")
def gpu_worker(
    django_db_setup: None, django_db_blocker: Any, tiny_model_dir: Path
) -> Iterator[WorkerProcess]:
    """A real ``celery worker -Q gpu`` process sharing the test database and Redis."""
    # Wake-ups left by earlier runs would only find an empty queue, but start clean anyway.
    redis_client().flushdb()
    worker = WorkerProcess()
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def unserved_model(settings: Any) -> str:
    """Jobs submitted in the test are for a model no worker process of the session serves, so
    they stay queued however fast the tiny model runs: counts of active jobs hold still."""
    settings.GENERATOR_MODELS = {"unserved": {"source": settings.GENERATOR_MODEL, "family": "sd15"}}
    settings.GENERATOR_DEFAULT_MODEL = "unserved"
    return "unserved"


@pytest.fixture(autouse=True)
def abuse_limits_relaxed(settings: Any) -> Iterator[None]:
    """Tests that are not about limits submit freely; tests about them set the limit they
    test. Redis-held limit state and refusal counters start empty in every test."""
    settings.SUBMIT_RATE = "1000/m"
    settings.SUBMIT_MAX_ACTIVE_JOBS = 1000
    settings.ANON_AGGREGATE_MAX_ACTIVE_JOBS = 1000
    settings.STATUS_POLL_RATE = "1000/m"
    clear_abuse_state()
    yield
