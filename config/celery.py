"""The Celery app. Its settings live in config.settings under the CELERY_ prefix."""

import os
from typing import Any

from celery import Celery
from django.conf import settings
from kombu.exceptions import ChannelError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("imagegen")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def queue_pending_messages(*, queue: str) -> int:
    """Messages waiting in the broker's ``queue`` (not counting the ones workers have taken)."""
    with app.connection_for_read() as connection:
        channel: Any = connection.default_channel
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except ChannelError:
            # Redis drops an empty list, so a queue with nothing waiting does not exist.
            return 0


def generation_queue(model: str) -> str:
    """The queue the wake-ups for ``model``'s jobs go to, consumed by the GPU workers serving it."""
    return f"{settings.GENERATION_QUEUE}.{model}"


def served_generation_queues() -> str:
    """The queues of this host's served models, comma-separated: ``scripts/worker.sh gpu``'s ``--queues``."""
    return ",".join(generation_queue(model) for model in settings.GENERATOR_SERVED_MODELS)
