"""The jobs admin: who gets in, what the list and a job's page show, what the actions do,
and that the list's query count does not grow with the table."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from core.errors import ApplicationError
from jobs import services
from jobs.models import FailureCode, GenerationJob, JobStatus
from ratelimit.models import BlockedNetwork
from tests.factories import EVERY_PARAMETER_SET, GenerationJobFactory, JobImageFactory
from tests.support.processes import WorkerProcess
from tests.support.waits import wait_for

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:jobs_generationjob_changelist")
DASHBOARD = reverse("admin:jobs_generationjob_dashboard")


def change_url(job: GenerationJob) -> str:
    return reverse("admin:jobs_generationjob_change", args=[job.pk])


def run_action(client: Client, action: str, jobs: list[GenerationJob]) -> None:
    response = client.post(CHANGELIST, {"action": action, "_selected_action": [str(job.pk) for job in jobs]})
    assert response.status_code == 302


@pytest.fixture
def viewer_client(client: Client) -> Client:
    """Staff who may look at jobs but not act on them."""
    user = User.objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_generationjob"))
    client.force_login(user)
    return client


@pytest.mark.parametrize("url", [CHANGELIST, DASHBOARD, "job-page"])
def test_admin_pages_send_anonymous_and_non_staff_users_to_the_login_page(client: Client, url: str) -> None:
    if url == "job-page":
        url = change_url(GenerationJobFactory())
    anonymous = client.get(url)
    client.force_login(User.objects.create_user("visitor", password="x"))
    not_staff = client.get(url)

    for response in (anonymous, not_staff):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_dashboard_refuses_staff_who_may_not_view_jobs(client: Client) -> None:
    client.force_login(User.objects.create_user("stranger", password="x", is_staff=True))

    assert client.get(DASHBOARD).status_code == 403


def test_job_list_shows_status_failure_ip_prompt_size_steps_times_and_worker(admin_client: Client) -> None:
    job = GenerationJobFactory(
        failed=True,
        failure_code=FailureCode.OUT_OF_MEMORY,
        prompt="a very long prompt about a lighthouse at dusk under heavy rain, painted in oils",
        client_ip="198.51.100.4",
        width=96,
        height=64,
        steps=7,
        started_at=timezone.now() - timedelta(seconds=12.5),
        worker_hostname="gpu-a@test",
    )

    html = admin_client.get(CHANGELIST).content.decode()

    for text in (
        str(job.pk),
        "Failed",
        "Out of memory",
        "198.51.100.4",
        "a very long prompt about a lighthouse at dusk under heavy r…",
        "96 x 64",
        "12.5 s",
        "gpu-a@test",
    ):
        assert text in html
    assert "painted in oils" not in html


def test_job_list_query_count_does_not_grow_with_rows(admin_client: Client) -> None:
    def queries_for(url: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(url).status_code == 200
        return len(captured)

    urls = [CHANGELIST, f"{CHANGELIST}?status__exact=failed&worker=gpu-1@test", f"{CHANGELIST}?q=lighthouse"]
    for _ in range(5):
        JobImageFactory(job=GenerationJobFactory(completed=True, retry_of=GenerationJobFactory(failed=True)))
    few = [queries_for(url) for url in urls]
    for _ in range(45):
        JobImageFactory(job=GenerationJobFactory(completed=True, retry_of=GenerationJobFactory(failed=True)))
    many = [queries_for(url) for url in urls]

    assert GenerationJob.objects.count() == 100
    assert many == few


def test_search_matches_a_job_id_or_client_ip_exactly_and_other_words_in_the_prompt(
    admin_client: Client,
) -> None:
    fox = GenerationJobFactory(prompt="a red fox in snow", client_ip="198.51.100.4")
    owl = GenerationJobFactory(prompt="an owl at night", client_ip="198.51.100.40")

    def found(term: str) -> set[str]:
        return {str(job.pk) for job in admin_client.get(CHANGELIST, {"q": term}).context["cl"].result_list}

    assert found(str(owl.pk)) == {str(owl.pk)}
    assert found("198.51.100.4") == {str(fox.pk)}
    assert found("FOX red") == {str(fox.pk)}
    assert found("giraffe") == set()


def test_worker_filter_offers_recent_workers_and_keeps_only_their_jobs(admin_client: Client) -> None:
    on_a = GenerationJobFactory(completed=True, worker_hostname="gpu-a@test")
    GenerationJobFactory(completed=True, worker_hostname="gpu-b@test")

    listing = admin_client.get(CHANGELIST, {"worker": "gpu-a@test"})

    worker_filter = next(spec for spec in listing.context["cl"].filter_specs if spec.title == "worker")
    assert [choice for choice, _label in worker_filter.lookup_choices] == ["gpu-a@test", "gpu-b@test"]
    assert [job.pk for job in listing.context["cl"].result_list] == [on_a.pk]


def test_status_failure_and_date_filters_narrow_the_list(admin_client: Client) -> None:
    oom_today = GenerationJobFactory(failed=True, failure_code=FailureCode.OUT_OF_MEMORY)
    oom_last_month = GenerationJobFactory(failed=True, failure_code=FailureCode.OUT_OF_MEMORY)
    GenerationJob.objects.filter(pk=oom_last_month.pk).update(created_at=timezone.now() - timedelta(days=40))
    GenerationJobFactory(failed=True, failure_code=FailureCode.TIMEOUT)
    GenerationJobFactory()

    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    listing = admin_client.get(
        CHANGELIST,
        {
            "status__exact": "failed",
            "failure_code__exact": "out_of_memory",
            "created_at__gte": str(midnight),
            "created_at__lt": str(midnight + timedelta(days=1)),
        },
    )

    assert [job.pk for job in listing.context["cl"].result_list] == [oom_today.pk]


def png(width: int, height: int) -> ContentFile[bytes]:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(buffer, format="PNG")
    return ContentFile(buffer.getvalue(), name="result.png")


def test_job_list_shows_a_lazy_thumbnail_of_completed_jobs_made_once_from_storage(
    admin_client: Client,
) -> None:
    image = JobImageFactory(
        job=GenerationJobFactory(completed=True, width=512, height=256), file=png(512, 256)
    )
    queued = GenerationJobFactory()
    thumbnail_url = reverse("admin:jobs_generationjob_thumbnail", args=[image.job.pk])

    page = admin_client.get(CHANGELIST).content.decode()
    first = admin_client.get(thumbnail_url)
    again = admin_client.get(thumbnail_url)

    assert f'<img src="{thumbnail_url}" loading="lazy"' in page
    assert reverse("admin:jobs_generationjob_thumbnail", args=[queued.pk]) not in page
    assert first["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(first.content)) as thumbnail:
        assert thumbnail.size == (services.THUMBNAIL_PIXELS, services.THUMBNAIL_PIXELS // 2)
    assert default_storage.exists(services.thumbnail_name(image))
    assert again.content == first.content
    assert (
        admin_client.get(reverse("admin:jobs_generationjob_thumbnail", args=[queued.pk])).status_code == 404
    )


def test_job_page_shows_thumbnail_parameters_timings_and_failure_and_cannot_be_edited(
    admin_client: Client,
) -> None:
    failed = GenerationJobFactory(failed=True, failure_message="The GPU ran out of memory for this request.")
    completed = JobImageFactory(job=GenerationJobFactory(completed=True, seed=424242, scheduler="euler")).job

    failed_page = admin_client.get(change_url(failed)).content.decode()
    completed_page = admin_client.get(change_url(completed)).content.decode()
    edit = admin_client.post(change_url(completed), {"prompt": "something else"})

    assert "The GPU ran out of memory for this request." in failed_page
    image = completed.images.get()
    assert f'<img src="{image.file.url}"' in completed_page
    for text in ("424242", "euler", "64 x 64", "Started at", "Finished at", "Run time"):
        assert text in completed_page
    assert 'name="prompt"' not in completed_page
    assert 'name="_save"' not in completed_page
    assert edit.status_code == 403
    completed.refresh_from_db()
    assert completed.prompt != "something else"


def test_cancel_action_cancels_queued_and_running_jobs_and_leaves_finished_ones(admin_client: Client) -> None:
    queued = GenerationJobFactory()
    running = GenerationJobFactory(running=True)
    completed = GenerationJobFactory(completed=True)

    run_action(admin_client, "cancel_selected", [queued, running, completed])

    assert [GenerationJob.objects.get(pk=job.pk).status for job in (queued, running, completed)] == [
        JobStatus.CANCELLED,
        JobStatus.CANCELLED,
        JobStatus.COMPLETED,
    ]
    # The running job's worker learns of it through the cancel flag it reads every step.
    assert services.cancelled_job_ids(job_ids=[running.pk]) == {str(running.pk)}


def test_retry_action_queues_a_copy_with_the_same_parameters_and_seed_linked_to_the_original(
    admin_client: Client,
) -> None:
    failed = GenerationJobFactory(
        failed=True, client_ip="198.51.100.9", **GenerationJob.fields_from(EVERY_PARAMETER_SET)
    )
    completed = GenerationJobFactory(completed=True)

    run_action(admin_client, "retry_selected", [failed, completed])

    retry = GenerationJob.objects.get(retry_of=failed)
    assert (retry.parameters, retry.client_ip) == (EVERY_PARAMETER_SET, failed.client_ip)
    assert retry.status == JobStatus.QUEUED
    assert not GenerationJob.objects.filter(retry_of=completed).exists()
    failed.refresh_from_db()
    assert failed.status == JobStatus.FAILED
    assert change_url(retry) in admin_client.get(change_url(failed)).content.decode()


def test_retry_reports_a_copy_that_todays_rules_refuse_instead_of_failing(admin_client: Client) -> None:
    too_many_steps = GenerationJobFactory(failed=True, steps=500)

    response = admin_client.post(
        CHANGELIST, {"action": "retry_selected", "_selected_action": [str(too_many_steps.pk)]}, follow=True
    )

    assert response.status_code == 200
    assert f"Job {too_many_steps.pk} not retried: Some parameters are invalid." in response.content.decode()
    assert not GenerationJob.objects.filter(retry_of=too_many_steps).exists()


def test_block_action_blocks_the_client_networks_of_selected_jobs_and_their_next_submit_is_refused(
    admin_client: Client,
) -> None:
    from_v4 = [GenerationJobFactory(client_ip="198.51.100.4") for _ in range(2)]
    from_v6 = GenerationJobFactory(client_ip="2001:db8:1:2::7")
    bystander = GenerationJobFactory(client_ip="192.0.2.1")

    run_action(admin_client, "block_clients", [*from_v4, from_v6])

    assert set(BlockedNetwork.objects.values_list("network", flat=True)) == {
        "198.51.100.4",
        "2001:db8:1:2::/64",
    }
    with pytest.raises(ApplicationError) as refused:
        services.job_submit(prompt="again", client_ip="2001:db8:1:2::99", width=64, height=64, steps=4)
    assert refused.value.code == "blocked"
    services.job_submit(prompt="fine", client_ip=bystander.client_ip, width=64, height=64, steps=4)


def test_staff_without_change_permission_can_look_but_not_cancel_retry_or_block(
    viewer_client: Client,
) -> None:
    queued = GenerationJobFactory()
    failed = GenerationJobFactory(failed=True)

    listing = viewer_client.get(CHANGELIST)
    for action, job in (("cancel_selected", queued), ("retry_selected", failed), ("block_clients", queued)):
        viewer_client.post(CHANGELIST, {"action": action, "_selected_action": [str(job.pk)]})

    assert listing.status_code == 200
    assert listing.context["action_form"] is None
    queued.refresh_from_db()
    assert queued.status == JobStatus.QUEUED
    assert not GenerationJob.objects.filter(retry_of=failed).exists()
    assert not BlockedNetwork.objects.exists()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_retried_job_runs_on_a_worker_and_completes_with_the_original_seed(
    admin_client: Client, gpu_worker: WorkerProcess
) -> None:
    failed = GenerationJobFactory(failed=True, failure_code=FailureCode.OUT_OF_MEMORY, seed=31337)

    run_action(admin_client, "retry_selected", [failed])

    retry = GenerationJob.objects.get(retry_of=failed)
    wait_for(lambda: GenerationJob.objects.get(pk=retry.pk).status == JobStatus.COMPLETED, timeout=60)
    assert retry.images.get().seed == 31337
