"""factory-boy factories for every model the tests create."""

from __future__ import annotations

import factory
from django.conf import settings
from django.core.files.base import ContentFile
from django.utils import timezone

from generator import GenerationParameters
from jobs.models import FailureCode, GenerationJob, JobImage, JobStatus
from ratelimit.callers import anonymous_caller
from ratelimit.client_ip import client_network
from webhooks.models import WebhookDelivery, WebhookEvent

# A value for every generation parameter, none of them its default.
EVERY_PARAMETER_SET = GenerationParameters(
    prompt="a red fox",
    negative_prompt="blurry",
    width=96,
    height=64,
    steps=5,
    guidance_scale=4.5,
    seed=987654,
    scheduler="euler",
    num_images=2,
    model="tiny-sd",
)


class GenerationJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = GenerationJob

    prompt = factory.Sequence(lambda n: f"a lighthouse at dusk, variation {n}")
    width = 64
    height = 64
    steps = 4
    guidance_scale = 7.5
    seed = factory.Sequence(lambda n: n)
    model = factory.LazyFunction(lambda: settings.GENERATOR_DEFAULT_MODEL)
    client_ip = "203.0.113.7"
    client_network = factory.LazyAttribute(lambda o: client_network(o.client_ip))
    # A test that names its own account (a key's, say) queues under it; else as the address would.
    client_aggregate = factory.LazyAttribute(
        lambda o: (
            o.client_network
            if o.client_network != client_network(o.client_ip)
            else anonymous_caller(o.client_ip).queue_account
        )
    )
    status = JobStatus.QUEUED

    class Params:
        # States as a worker leaves them, with the timestamps the model's constraints ask for.
        running = factory.Trait(
            status=JobStatus.RUNNING,
            started_at=factory.LazyFunction(timezone.now),
            worker_hostname="gpu-1@test",
        )
        completed = factory.Trait(
            status=JobStatus.COMPLETED,
            started_at=factory.LazyFunction(timezone.now),
            finished_at=factory.LazyFunction(timezone.now),
            worker_hostname="gpu-1@test",
        )
        failed = factory.Trait(
            status=JobStatus.FAILED,
            started_at=factory.LazyFunction(timezone.now),
            finished_at=factory.LazyFunction(timezone.now),
            worker_hostname="gpu-1@test",
            failure_code=FailureCode.INFERENCE_ERROR,
            failure_message="The image could not be generated.",
        )


class JobImageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = JobImage

    job = factory.SubFactory(
        GenerationJobFactory, status=JobStatus.COMPLETED, finished_at=factory.LazyFunction(timezone.now)
    )
    index = 0
    seed = factory.SelfAttribute("job.seed")
    file = factory.LazyAttribute(
        lambda o: ContentFile(b"\x89PNG\r\n\x1a\n", name=f"{o.job.id}/{o.index}.png")
    )


class WebhookDeliveryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WebhookDelivery

    job = factory.SubFactory(
        GenerationJobFactory, status=JobStatus.COMPLETED, finished_at=factory.LazyFunction(timezone.now)
    )
    event = WebhookEvent.COMPLETED
    webhook_id = factory.Sequence(lambda n: f"msg_test{n:08d}")
    url = factory.SelfAttribute("job.webhook_url")
    payload = '{"type":"job.completed","timestamp":"2026-01-01T00:00:00Z","data":{}}'
