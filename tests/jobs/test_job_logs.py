"""Every job event is one structured log line: logfmt by default, the same fields as JSON."""

from __future__ import annotations

import json
import logging
import shlex

import pytest

from core.logging import JsonFormatter, LogfmtFormatter
from jobs import services
from jobs.models import FailureCode, GenerationJob

pytestmark = pytest.mark.django_db


def job_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    """Each jobs.services line parsed back from its ``key=value`` text."""
    return [
        dict(pair.split("=", 1) for pair in shlex.split(record.getMessage()))
        for record in caplog.records
        if record.name.startswith("jobs.services.")
    ]


def test_submit_start_and_complete_each_log_one_line_with_duration(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jobs.services")

    job = services.job_submit(
        prompt="a quiet harbour", client_ip="198.51.100.4", width=64, height=64, steps=2
    )
    services.claim_next_jobs(worker_hostname="gpu@box", max_images=4)
    services.job_complete(job=GenerationJob.objects.get(pk=job.pk), pngs=[b"png"])

    submitted, started, completed = job_events(caplog)
    assert submitted == {
        "event": "submitted",
        "job": str(job.id),
        "client_ip": "198.51.100.4",
        "account": "198.51.100.4",
        "images": "1",
        "cost_units": "0.003",
    }
    assert started == {"event": "started", "job": str(job.id), "worker": "gpu@box", "batch": "1"}
    assert completed["event"] == "completed"
    assert completed["job"] == str(job.id)
    assert float(completed["duration_s"]) >= 0
    assert completed["images"] == "1"


def test_failure_logs_its_code(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jobs.services")
    job = services.job_submit(prompt="a quiet harbour", client_ip="198.51.100.4")
    caplog.clear()

    services.job_fail(job_id=job.pk, code=FailureCode.OUT_OF_MEMORY, message="The GPU ran out of memory.")

    assert job_events(caplog) == [{"event": "failed", "job": str(job.id), "code": "out_of_memory"}]


def test_json_and_logfmt_formatters_write_the_same_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jobs.services")
    job = services.job_submit(prompt="a quiet harbour", client_ip="198.51.100.4")
    (record,) = [record for record in caplog.records if record.name.startswith("jobs.services.")]

    as_json = json.loads(JsonFormatter().format(record))
    as_logfmt = dict(pair.split("=", 1) for pair in shlex.split(LogfmtFormatter().format(record)))

    assert {key: as_json[key] for key in ("level", "logger", "event", "job", "client_ip")} == {
        "level": "INFO",
        "logger": "jobs.services.submit",
        "event": "submitted",
        "job": str(job.id),
        "client_ip": "198.51.100.4",
    }
    assert {key: as_logfmt[key] for key in ("level", "logger", "event", "job")} == {
        "level": "INFO",
        "logger": "jobs.services.submit",
        "event": "submitted",
        "job": str(job.id),
    }


def test_a_failed_job_logs_its_fields_as_json_keys(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jobs.services")
    job = services.job_submit(prompt="a quiet harbour", client_ip="198.51.100.4")
    caplog.clear()

    services.job_fail(job_id=job.pk, code=FailureCode.TIMEOUT, message="Too slow.")

    (record,) = [record for record in caplog.records if record.name.startswith("jobs.services.")]
    line = json.loads(JsonFormatter().format(record))
    assert {key: line[key] for key in ("logger", "event", "job", "code")} == {
        "logger": "jobs.services.finish",
        "event": "failed",
        "job": str(job.id),
        "code": "timeout",
    }
    assert "message" not in line
