from __future__ import annotations

import pytest
from django.utils import timezone

from jobs import services
from jobs.models import TRANSITION_SOURCES, FailureCode, JobStatus
from tests.factories import GenerationJobFactory

pytestmark = pytest.mark.django_db


def make_job(status: str) -> object:
    fields: dict[str, object] = {"status": status}
    if status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
        fields["finished_at"] = timezone.now()
    if status in (JobStatus.FAILED, JobStatus.CANCELLED):
        fields["failure_code"] = FailureCode.INFERENCE_ERROR
    return GenerationJobFactory(**fields)


ALL_MOVES = [
    (source, target) for source in JobStatus.values for target in JobStatus.values if source != target
]


@pytest.mark.parametrize(("source", "target"), ALL_MOVES)
def test_transition_moves_only_along_allowed_edges(source: str, target: str) -> None:
    job = make_job(source)
    extra = {"finished_at": timezone.now(), "failure_code": FailureCode.INFERENCE_ERROR}

    moved = services.transition_job(job_id=job.pk, to=target, **extra)

    job.refresh_from_db()
    assert moved is (source in TRANSITION_SOURCES[target])
    assert job.status == (target if moved else source)


def test_completed_job_never_goes_back_to_running() -> None:
    job = make_job(JobStatus.COMPLETED)

    assert not services.transition_job(job_id=job.pk, to=JobStatus.RUNNING)
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED


def test_a_job_is_claimed_by_one_worker_only() -> None:
    GenerationJobFactory()

    first = services.claim_next_jobs(worker_hostname="a@test", max_images=4)
    second = services.claim_next_jobs(worker_hostname="b@test", max_images=4)

    assert len(first) == 1 and second == []
    assert first[0].worker_hostname == "a@test"
