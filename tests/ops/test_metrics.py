"""/metrics exposes request metrics and the job numbers, whichever process finished the jobs."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs import services
from jobs.models import FailureCode
from tests.factories import GenerationJobFactory, JobImageFactory
from tests.ops.conftest import METRICS_TOKEN, metric_samples, scrape_in_process
from tests.support.processes import WebProcess, WorkerProcess
from tests.support.waits import http_json, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def web(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebProcess]:
    # Two processes sharing request metrics through files, as production's gunicorn does.
    web = WebProcess(
        extra_env={
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("prometheus")),
            "METRICS_TOKEN": METRICS_TOKEN,
        }
    )
    try:
        web.wait_ready()
        yield web
    finally:
        web.stop()


def scrape(web: WebProcess) -> dict[str, float]:
    request = urllib.request.Request(
        f"{web.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return metric_samples(response.read().decode())


def test_metrics_expose_job_status_duration_failures_and_requests_after_a_job_runs(
    web: WebProcess, gpu_worker: WorkerProcess
) -> None:
    services.job_fail(job_id=GenerationJobFactory(running=True).pk, code=FailureCode.TIMEOUT, message="slow")
    submitted = http_json(
        "POST", f"{web.url}/api/v1/jobs", {"prompt": "a paper boat", "width": 64, "height": 64, "steps": 2}
    )[2]

    def completed() -> bool:
        return bool(http_json("GET", submitted["status_url"])[2]["status"] == "completed")

    wait_for(completed, timeout=60)
    samples = scrape(web)

    # The worker process counted the completion; the web process reports it.
    assert samples['imagegen_jobs{status="queued"}'] == 0
    assert samples['imagegen_jobs{status="running"}'] == 0
    assert 'imagegen_jobs{status="completed"}' not in samples
    assert samples['imagegen_jobs_finished_total{status="completed"}'] == 1
    assert samples['imagegen_jobs_finished_total{status="failed"}'] == 1
    assert samples['imagegen_job_failures_total{code="timeout"}'] == 1
    assert samples["imagegen_job_duration_seconds_count{}"] == 1
    assert samples['imagegen_job_duration_seconds_bucket{le="+Inf"}'] == 1
    assert samples["imagegen_job_duration_seconds_sum{}"] > 0
    # django-prometheus's request counter, summed over both gunicorn processes.
    posts = samples['django_http_requests_total_by_method_total{method="POST"}']
    assert posts >= 1


def test_metrics_count_refused_submissions_by_rule(api_client: APIClient, settings: Any) -> None:
    settings.SUBMIT_MAX_ACTIVE_JOBS = 1
    body = {"prompt": "a paper boat", "width": 64, "height": 64, "steps": 2}
    statuses = [api_client.post("/api/v1/jobs", body, format="json").status_code for _ in range(3)]
    assert statuses == [202, 429, 429]

    samples = scrape_in_process()

    assert samples['imagegen_rate_limit_hits_total{rule="too_many_active_jobs"}'] == 2


def test_metrics_count_deduplicated_submits(api_client: APIClient) -> None:
    original = JobImageFactory(job=GenerationJobFactory(completed=True, prompt="a paper boat", seed=9))
    body = {"prompt": "a paper boat", "width": 64, "height": 64, "steps": 4, "seed": 9}

    answered = api_client.post("/api/v1/jobs", body, format="json").json()
    samples = scrape_in_process()

    assert (answered["status"], answered["image_url"].endswith(original.file.name)) == ("completed", True)
    assert samples["imagegen_dedupe_hits_total{}"] == 1
    assert samples['imagegen_jobs_finished_total{status="completed"}'] == 1


def test_metrics_refuse_a_scrape_without_the_token(web: WebProcess) -> None:
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"{web.url}/metrics", timeout=10)

    assert error.value.code == 401
