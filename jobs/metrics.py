"""The jobs app's gauges on /metrics: the autoscaling signal (queue depth and the oldest
job's wait, by model) and the GPU workers alive to serve it."""

from __future__ import annotations

from jobs import selectors
from ops.metrics import GaugeReading


def queue_gauges() -> list[GaugeReading]:
    queued = selectors.queued_jobs_by_model()
    return [
        GaugeReading(
            "imagegen_queue_depth",
            "Jobs waiting in the queue, by model.",
            ("model",),
            {(model,): waiting.count for model, waiting in queued.items()},
        ),
        GaugeReading(
            "imagegen_queue_oldest_age_seconds",
            "Seconds the oldest queued job has waited, by model; 0 when none waits.",
            ("model",),
            {(model,): waiting.oldest_age_seconds for model, waiting in queued.items()},
        ),
        GaugeReading(
            "imagegen_gpu_workers_live",
            "GPU worker processes that loaded the pipeline and beat within three heartbeats.",
            (),
            {(): len(selectors.live_gpu_workers())},
        ),
    ]
