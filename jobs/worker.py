"""The GPU worker's side of a job: claim a batch, run the engine, store or fail each job.
Only worker processes import this module (it loads torch)."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime

import redis
import torch
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.utils import timezone
from PIL import Image, PngImagePlugin

from core.errors import ApplicationError
from core.logging import log_event
from generator.engine import Engine, GeneratorOutOfMemory
from generator.previews import PreviewRenderer
from jobs import selectors, services
from jobs.live.previews import preview_store
from jobs.models import FailureCode, GenerationJob
from jobs.validation import validate_parameters

logger = logging.getLogger(__name__)

# One warm engine per model this process has served, by model name.
_engines: dict[str, Engine] = {}
# One preview renderer per device and dtype the engines run on.
_preview_renderers: dict[tuple[torch.device, torch.dtype], PreviewRenderer] = {}


class AllJobsCancelled(Exception):
    """Every job of the running batch was cancelled or is past its deadline: stop the pipeline now."""


def get_engine(model: str) -> Engine:
    """The process's warm engine of ``model``, loaded on first use (or at worker process start)."""
    if model not in _engines:
        spec = selectors.get_model(model)
        if spec is None:
            raise ValueError(f"model {model!r} is not in GENERATOR_MODELS")
        started = time.perf_counter()
        engine = Engine.load(
            spec.source,
            allow_hub=settings.GENERATOR_ALLOW_HUB,
            device=settings.GENERATOR_DEVICE,
            dtype=settings.GENERATOR_DTYPE,
            compile_denoiser=settings.GENERATOR_COMPILE,
        )
        if settings.GENERATOR_WARMUP:
            engine.warm_up()
        _engines[model] = engine
        log_event(logger.info, "engine_ready", model=model, seconds=round(time.perf_counter() - started, 2))
    return _engines[model]


def get_preview_renderer(engine: Engine) -> PreviewRenderer:
    """A preview renderer on ``engine``'s device and dtype (TAESD when configured)."""
    placement = (engine.device, engine.pipeline.dtype)
    if placement not in _preview_renderers:
        _preview_renderers[placement] = PreviewRenderer.load(
            image_format=settings.PREVIEW_FORMAT,
            taesd_folder=settings.PREVIEW_TAESD,
            device=engine.device,
            dtype=engine.pipeline.dtype,
        )
    return _preview_renderers[placement]


class LivePreviews:
    """Renders each job's first image every ``every`` steps from the step's latents and stores it
    for the API; ``latest_step`` is the step of the last stored previews. A preview that fails
    (a Redis that does not answer, a latent layout it cannot draw) is skipped; the job goes on."""

    def __init__(self, jobs: Sequence[GenerationJob], *, renderer: PreviewRenderer, every: int) -> None:
        self._jobs = list(jobs)
        # Each job's first image's row in the batch: the engine lays images out job by job.
        self._rows = [sum(job.num_images for job in self._jobs[:index]) for index in range(len(self._jobs))]
        self._renderer = renderer
        self._every = every
        self.latest_step: int | None = None

    def __call__(self, step: int, latents: torch.Tensor) -> None:
        if step % self._every:
            return
        first = self._jobs[0]
        try:
            pictures = self._renderer.render(latents, self._rows, width=first.width, height=first.height)
            for job, picture in zip(self._jobs, pictures, strict=True):
                preview_store(
                    job_id=job.pk, step=step, image=picture, content_type=self._renderer.content_type
                )
        except Exception:
            log_event(logger.warning, "preview_failed", exc_info=True, jobs=len(self._jobs), step=step)
            return
        self.latest_step = step


class Heartbeat:
    """Refreshes the heartbeat of a batch's jobs every ``WORKER_HEARTBEAT_SECONDS``, from claim to
    the last stored file, so the reaper can tell a dead worker from a slow one. A thread, not the
    step callback: encoding, the VAE decode and storage writes have no steps. A daemon, never
    joined: it dies with the process and never delays a batch's end, even when Redis hangs."""

    def __init__(self, job_ids: Sequence[services.JobId], *, worker_hostname: str, interval: float) -> None:
        self._job_ids = list(job_ids)
        self._worker_hostname = worker_hostname
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_stopped, name="job-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()

    def _beat_until_stopped(self) -> None:
        while not self._stopped.is_set():
            try:
                services.job_record_heartbeat(job_ids=self._job_ids, worker_hostname=self._worker_hostname)
            except Exception:
                # The job goes on; if Redis stays away for three beats the reaper may re-queue it.
                log_event(logger.warning, "heartbeat_failed", exc_info=True, jobs=len(self._job_ids))
            self._stopped.wait(self._interval)


class WorkerLiveness:
    """Beats ``worker_record_alive`` every ``WORKER_HEARTBEAT_SECONDS`` from a daemon thread
    for the process's lifetime, idle or busy: the live-GPU-workers gauge counts these beats,
    and the beats stop with the process, however it dies."""

    def __init__(self, *, worker_hostname: str, interval: float) -> None:
        self._worker_hostname = worker_hostname
        self._interval = interval
        self._thread = threading.Thread(target=self._beat_forever, name="worker-liveness", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _beat_forever(self) -> None:
        while True:
            try:
                services.worker_record_alive(worker_hostname=self._worker_hostname)
            except Exception:
                log_event(logger.warning, "liveness_beat_failed", exc_info=True)
            time.sleep(self._interval)


class ProgressReporter:
    """Writes progress at most every ``min_steps`` steps and ``min_seconds`` seconds, and checks
    the cancel flags and the deadlines on every step, failing a job past its deadline
    ``deadline_exceeded``. A check Redis does not answer counts as "not cancelled": a
    cancelled job's result is still refused when it is stored (``job_complete``)."""

    def __init__(
        self,
        job_ids: Sequence[services.JobId],
        *,
        min_steps: int,
        min_seconds: float,
        deadlines: Mapping[str, datetime] | None = None,
        previews: LivePreviews | None = None,
    ) -> None:
        self.job_ids = [str(job_id) for job_id in job_ids]
        self._previews = previews
        self.cancelled: set[str] = set()
        self.expired: set[str] = set()
        self._deadlines = dict(deadlines or {})
        self._min_steps = min_steps
        self._min_seconds = min_seconds
        self._last_step = 0
        self._last_time = time.monotonic()
        self._cancel_check_failed = False

    def __call__(self, step: int, total: int) -> None:
        try:
            self.cancelled = services.cancelled_job_ids(job_ids=self.job_ids)
        except redis.RedisError as error:
            if not self._cancel_check_failed:
                log_event(logger.warning, "cancel_check_failed", jobs=len(self.job_ids), error=error)
            self._cancel_check_failed = True
        self._end_jobs_past_deadline()
        if len(self.cancelled | self.expired) == len(self.job_ids):
            raise AllJobsCancelled
        now = time.monotonic()
        due = step - self._last_step >= self._min_steps and now - self._last_time >= self._min_seconds
        preview_step = self._previews.latest_step if self._previews else None
        # A new preview is announced at once, so the page shows it while it is fresh.
        if due or step == total or (preview_step == step):
            services.job_record_progress(
                job_ids=self.job_ids, step=step, total=total, preview_step=preview_step
            )
            self._last_step, self._last_time = step, now

    def _end_jobs_past_deadline(self) -> None:
        now = timezone.now()
        for job_id, deadline in list(self._deadlines.items()):
            if deadline <= now:
                # Moved or not (cancelled, or already failed by the sweep), it is over for this batch.
                services.job_fail_deadline_exceeded(job_id=job_id)
                self.expired.add(job_id)
                del self._deadlines[job_id]


def encode_png(image: Image.Image, *, job: GenerationJob, seed: int) -> bytes:
    """PNG bytes with the generation parameters embedded, so a file alone can be reproduced."""
    info = PngImagePlugin.PngInfo()
    info.add_text(
        "parameters",
        f"{job.prompt}\nNegative prompt: {job.negative_prompt}\nSteps: {job.steps}, Sampler: {job.scheduler}, "
        f"CFG scale: {job.guidance_scale}, Seed: {seed}, Size: {job.width}x{job.height}",
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _reject_invalid(jobs: Sequence[GenerationJob]) -> list[GenerationJob]:
    """Repeats submit-time validation: limits may have changed since the job was queued."""
    valid = []
    for job in jobs:
        try:
            validate_parameters(job.parameters)
        except ApplicationError as error:
            reasons = "; ".join(e.message for errors in error.fields.values() for e in errors)
            services.job_fail(job_id=job.pk, code=FailureCode.INVALID_PROMPT, message=reasons)
        else:
            valid.append(job)
    return valid


def run_batch(jobs: Sequence[GenerationJob]) -> None:
    """Runs claimed (``running``) jobs as one pipeline call; each ends in a terminal state."""
    jobs = _reject_invalid(jobs)
    if not jobs:
        return
    engine = get_engine(jobs[0].model)
    previews = (
        LivePreviews(jobs, renderer=get_preview_renderer(engine), every=settings.PREVIEW_EVERY_STEPS)
        if settings.PREVIEW_EVERY_STEPS > 0
        else None
    )
    reporter = ProgressReporter(
        [job.pk for job in jobs],
        min_steps=settings.PROGRESS_MIN_STEPS,
        min_seconds=settings.PROGRESS_MIN_SECONDS,
        deadlines={str(job.pk): job.deadline_at for job in jobs if job.deadline_at is not None},
        previews=previews,
    )
    try:
        results = engine.generate([job.parameters for job in jobs], on_step=reporter, on_latents=previews)
    except AllJobsCancelled:
        log_event(logger.info, "batch_stopped", reason="cancelled", jobs=len(jobs))
        return
    except SoftTimeLimitExceeded:
        _fail_all(jobs, FailureCode.TIMEOUT, "Generation took longer than this service allows.")
        return
    except GeneratorOutOfMemory:
        _fail_all(jobs, FailureCode.OUT_OF_MEMORY, "The GPU ran out of memory for this request.")
        return
    except Exception:
        log_event(logger.exception, "inference_error", jobs=",".join(str(job.pk) for job in jobs))
        _fail_all(jobs, FailureCode.INFERENCE_ERROR, "The image could not be generated.")
        return
    for job, result in zip(jobs, results, strict=True):
        seeds = job.parameters.image_seeds()
        pngs = [
            encode_png(image, job=job, seed=seed) for seed, image in zip(seeds, result.images, strict=True)
        ]
        try:
            services.job_complete(
                job=job, pngs=pngs, warnings=["prompt_truncated"] if result.prompt_truncated else []
            )
        except Exception:
            log_event(logger.exception, "store_error", job=job.pk)
            services.job_fail(
                job_id=job.pk, code=FailureCode.INFERENCE_ERROR, message="The image could not be stored."
            )


def _fail_all(jobs: Sequence[GenerationJob], code: str, message: str) -> None:
    for job in jobs:
        services.job_fail(job_id=job.pk, code=code, message=message)


def process_next_batch(*, worker_hostname: str, model: str | None = None) -> int:
    """Claims and runs one batch of ``model``'s jobs (None: of any served model); returns how
    many jobs it ran. A wake-up names its model: taking another model's job instead would leave
    that model's wake-up to a worker that may not serve the job it was sent for."""
    jobs = services.claim_next_jobs(
        worker_hostname=worker_hostname,
        max_images=settings.GENERATION_BATCH_IMAGES,
        models=[model] if model else settings.GENERATOR_SERVED_MODELS,
    )
    if jobs:
        with Heartbeat(
            [job.pk for job in jobs],
            worker_hostname=worker_hostname,
            interval=settings.WORKER_HEARTBEAT_SECONDS,
        ):
            run_batch(jobs)
    return len(jobs)
